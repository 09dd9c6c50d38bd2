"""``fts_core.values.coerce``: the one reader of user-written values (configs, criterion options,
notebook parameters)."""
from __future__ import annotations

from typing import Any, Optional

import pytest

from fts_core.values import coerce


@pytest.mark.parametrize("value, hint, expected", [
    ("5e-4", float, 5e-4),            # YAML 1.1 reads 5e-4 as a string
    (3, float, 3.0),
    (3.0, int, 3),
    (" 7 ", int, 7),
    ("12345678901234567891", int, 12345678901234567891),  # not through a float
    (5, str, "5"),                    # papermill reads -p name 5 as a number
    ("fts, snip", list[str], ["fts", "snip"]),
    (3, list[int], [3]),
    ("0.9,0.95", list[float], [0.9, 0.95]),
    ("80,120", tuple[int, ...], (80, 120)),
    ([60, 120.0], tuple[int, ...], (60, 120)),
    (None, Optional[int], None),
    (None, int | None, None),
    ({"a": 1}, dict, {"a": 1}),
    (True, bool, True),
    (object, Any, object),
])
def test_harmless_differences_are_fixed(value, hint, expected):
    out = coerce(value, hint, "config x")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, hint, message", [
    (2.5, int, "config x=2.5: expected int, got float"),
    (True, int, "config x=True: expected int, got bool"),
    ("abc", float, "config x='abc': expected float, got str"),
    (1, bool, "config x=1: expected bool, got int"),
    (None, int, "config x=None: expected int, got NoneType"),
    ([1], dict, "config x=[1]: expected dict, got list"),
    ("0.9,hello", list[float], "config x: element 'hello' is not a float"),
    ([1, 2.5], tuple[int, ...], "config x: element 2.5 is not an int"),
])
def test_wrong_types_are_named(value, hint, message):
    with pytest.raises(TypeError) as err:
        coerce(value, hint, "config x")
    assert str(err.value) == message


def test_a_float_must_be_finite():
    with pytest.raises(ValueError, match=r"config x='inf': must be finite"):
        coerce("inf", float, "config x")


def test_configs_options_and_notebooks_read_a_value_alike():
    from fts_core.chapters.notebook import check_parameters
    from fts_core.experiments.config import RunConfig
    from fts_core.scoring import CRITERIA

    assert RunConfig(model="mlp", dataset="digits", criterion="fts", lr="5e-4").lr == 5e-4
    assert CRITERIA["synflow"].make_options({"rounds": 3.0}).rounds == 3
    namespace = {"__annotations__": {"lr": float}, "lr": "5e-4", "In": ["", "# Parameters\nlr = '5e-4'\n", ""]}
    check_parameters(namespace)
    assert namespace["lr"] == 5e-4
