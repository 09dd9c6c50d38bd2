"""Command line: ``python -m fts_core {list,run,sweep} ...``, each a thin wrapper around a library
function. Bad input is one line on stderr, ``error: ...``, and exit status 2."""
from __future__ import annotations

import argparse
import errno
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import yaml

import fts_core
from fts_core.experiments.claims import Claimed
from fts_core.experiments.config import RunConfig
from fts_core.experiments.runner import run
from fts_core.experiments.sweeps import SweepError, SweepSpec, cell_states, sweep
from fts_core.io import CELLS_DIR, CorruptCheckpointError
from fts_core.scoring import CRITERIA
from fts_core.setup.datasets import DATASETS
from fts_core.setup.models import MODELS

_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, CorruptCheckpointError)


def _cmd_list(args: argparse.Namespace) -> int:
    print("criteria:", ", ".join(CRITERIA))
    print("models:  ", ", ".join(MODELS))
    print("datasets:", ", ".join(DATASETS))
    return 0


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict with YAML-typed values (``epochs=3`` -> 3, ``milestones=[2,3]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    d = RunConfig.from_yaml(args.config).to_dict()  # the file's paths are relative to the file
    d.update(parse_set(args.set))  # a command-line path: relative to the current directory
    if args.quiet:
        d["quiet"] = True
    result = run(RunConfig.from_dict(d))
    line = (f"{result['run_dir']}: test accuracy final {result['test_accuracy_final']:.4f}, best-val "
            f"{result['test_accuracy_best_val']:.4f} (epoch {result['best_epoch']}), sparsity "
            f"{result['realised_sparsity']:.4f}")
    print(line if not math.isnan(result["test_accuracy_final"]) else line + " (diverged)")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    spec = SweepSpec.from_yaml(args.spec)
    if args.out_dir:  # a command-line path: relative to the current directory
        spec.out_dir = str(Path(args.out_dir).expanduser().resolve())
    if args.status:
        states = cell_states(spec)
        for cid, state in states.items():
            print(f"{state:8s} {cid}")
        counts = {s: sum(v == s for v in states.values()) for s in ("done", "failed", "pending")}
        print(f"{counts['done']} done, {counts['failed']} failed, {counts['pending']} pending "
              f"of {len(states)} cells in {spec.sweep_dir}")
        for path in sorted((spec.sweep_dir / CELLS_DIR).glob("*.damaged*")):
            print(f"damaged cell file set aside (its cell is redone by --resume): {path}")
        return 0
    sweep(spec, address=args.address, resume=args.resume, max_parallel=args.max_parallel,
          backend="serial" if args.serial else "ray", quiet=args.quiet)
    return 0 if all(s == "done" for s in cell_states(spec).values()) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fts_core",
                                     description="Fisher-Taylor Sensitivity: pruning at initialization, one-shot.")
    parser.add_argument("--version", action="version", version=f"fts_core {fts_core.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="list the known criteria, models and datasets").set_defaults(func=_cmd_list)

    p = sub.add_parser("run", help="run one experiment (warm-up, score, prune, train, test); resumes if interrupted",
                       description="Run one experiment from a YAML config. Re-running resumes from the last good "
                                   "checkpoint, or prints the stored result when the run has finished.")
    p.add_argument("config", help="YAML file with RunConfig keys (see fts_core.experiments.config.RunConfig); its "
                   "relative out_dir and root are relative to the file's folder, ~ is the home folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value, e.g. --set epochs=3 --set milestones=[1,2])")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "sweep", help="run a grid of runs or notebooks on Ray (resumable)",
        description="Run every cell of a sweep file that has no result yet, on an embedded local Ray "
                    "instance or an existing Ray cluster (--address). Finished cells are written by the "
                    "workers, so an interrupted sweep loses nothing: rerun with --resume.",
        epilog="cluster: `ray start --head --port=6379` on the head node, `ray start --address=HEAD:6379` "
               "on the others (same environment, shared filesystem for out_dir), then "
               "`python -m fts_core sweep SWEEP.yaml --address HEAD:6379 --resume`. "
               "Exit status 1 when some cell failed.")
    p.add_argument("spec", help="sweep YAML file (its relative paths are relative to the file's folder; ~ is "
                   "the home folder)")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto or HOST:6379); "
                   "default: start an embedded local Ray instance")
    p.add_argument("--resume", action="store_true",
                   help="continue in a sweep directory that already has cells (skip finished, retry failed)")
    p.add_argument("--max-parallel", type=int, default=None, metavar="N",
                   help="at most N cells at a time (default: one per GPU, else one per CPU slot)")
    p.add_argument("--out-dir", default=None, help="override the sweep file's out_dir (relative to the current "
                   "directory)")
    p.add_argument("--serial", action="store_true", help="run in this process, no Ray")
    p.add_argument("--status", action="store_true", help="list the cells and their state; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    resume = "rerun with --resume to continue" if args.command == "sweep" else "rerun the same command to resume"
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            return int(args.func(args) or 0)
        except _USER_ERRORS as err:
            if isinstance(err, OSError) and err.errno is not None:  # the system's, not one of ours
                print(f"error: {_os_error(err, resume)}", file=sys.stderr)
                return 1
            print(f"error: {err}", file=sys.stderr)
            return 2
        except (SweepError, Claimed) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"interrupted: what finished is kept (nothing is half-written); {resume}", file=sys.stderr)
            return 130
        except OSError as err:  # a full disk, a read-only folder, a quota: the system's word and the way out
            print(f"error: {_os_error(err, resume)}", file=sys.stderr)
            return 1


def _os_error(err: OSError, resume: str) -> str:
    """One line for an error of the system: what failed, on which file, and the way out."""
    where = f" {err.filename}" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device writing{where} ({err.strerror}); free some space, then {resume}"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"cannot write{where} ({err.strerror}); use a folder you can write to (out_dir, or --out-dir "
                "for a sweep)")
    return f"{err.strerror or err}:{where}"


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
