"""Command line: ``python -m fts_core {list,run,sweep} ...``.

Each sub-command is a thin wrapper around a library function; see ``--help`` of each.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import fts_core


def _cmd_list(args: argparse.Namespace) -> int:
    from fts_core.criteria import CRITERIA
    from fts_core.data import DATASETS
    from fts_core.models import MODELS

    print("criteria:", ", ".join(CRITERIA))
    print("models:  ", ", ".join(MODELS))
    print("datasets:", ", ".join(DATASETS))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fts_core",
        description="Fisher-Taylor Sensitivity: pruning at initialization, one-shot.",
    )
    parser.add_argument("--version", action="version", version=f"fts_core {fts_core.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_list = sub.add_parser("list", help="list the known criteria, models and datasets")
    p_list.set_defaults(func=_cmd_list)

    # `run` and `sweep` register themselves here (see runner.add_cli / sweeps.add_cli)
    for module in ("runner", "sweeps"):
        try:
            mod = __import__(f"fts_core.{module}", fromlist=["add_cli"])
        except ModuleNotFoundError as err:  # a piece not written yet; real import errors surface
            if err.name != f"fts_core.{module}":
                raise
            continue
        add_cli = getattr(mod, "add_cli", None)
        if add_cli is not None:
            add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
