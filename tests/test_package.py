"""The package's public face: version, lazy names, the command line."""
import subprocess
import sys

import fts_core


def test_version_is_a_release_string():
    parts = fts_core.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)


def test_unknown_attribute_raises_attribute_error():
    try:
        fts_core.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_every_exported_name_resolves():
    for name in fts_core.__all__:
        assert getattr(fts_core, name) is not None, name


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "fts_core", "--help"], capture_output=True, text=True, check=True)
    assert "usage: python -m fts_core" in out.stdout
    for command in ("list", "run", "sweep"):
        assert command in out.stdout
