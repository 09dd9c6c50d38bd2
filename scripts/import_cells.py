"""Bring a sweep's finished cells into the repository's committed results.

    python scripts/import_cells.py SWEEP_FILE SOURCE_DIR      # e.g. a sweep run in a git worktree

Committed cells are computed from a clean checkout of a commit on ``main`` (a ``git worktree``
whose sweep writes to a folder outside it, ``--out-dir``), then copied here with this script.
It copies each finished cell of SOURCE_DIR that belongs to SWEEP_FILE's grid into the sweep
file's ``out_dir`` (relative to the sweep file), and refuses a row whose code cannot be checked
out (``git_dirty`` not false, or a revision this repository does not have). Paths in a row
that point into SOURCE_DIR are rewritten relative to the repository. Cells already here are
left as they are; the spec files and ``results.csv`` are rewritten from the sweep file and all cells.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fts_core.experiments.results import load_results  # noqa: E402
from fts_core.experiments.sweeps import SweepSpec, expand  # noqa: E402
from fts_core.io import (RESULTS_CSV, SWEEP_JSON, SWEEP_YAML, atomic_write_csv, atomic_write_json,  # noqa: E402
                         atomic_write_yaml, cell_file, upgrade_record)


def relative_paths(obj: Any, old_prefix: str, new_prefix: str) -> Any:
    """``obj`` with every string under ``old_prefix`` rewritten to start with ``new_prefix``."""
    if isinstance(obj, dict):
        return {k: relative_paths(v, old_prefix, new_prefix) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_paths(v, old_prefix, new_prefix) for v in obj]
    if isinstance(obj, str) and (obj == old_prefix or obj.startswith(old_prefix + "/")):
        return new_prefix + obj[len(old_prefix):]
    return obj


def checkable(row: dict[str, Any]) -> str | None:
    """Why a row's code cannot be checked out here, or None when it can."""
    made = upgrade_record(row).get("provenance") or {}
    if made.get("git_dirty") is not False:
        return f"git_dirty is {made.get('git_dirty')!r}"
    rev = made.get("git_revision")
    found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True)
    return None if rev and found.returncode == 0 else f"revision {rev!r} is not in this repository"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_file")
    parser.add_argument("source_dir", help="the sweep directory the cells were computed in")
    parser.add_argument("--prefix", default=None,
                        help="the absolute path the rows name for the source (default: SOURCE_DIR resolved)")
    args = parser.parse_args()
    spec = SweepSpec.from_yaml(args.sweep_file)
    source = Path(args.source_dir).resolve()
    dest = spec.sweep_dir
    prefix = args.prefix or str(source)
    new_prefix = str(dest.relative_to(REPO))
    copied = refused = 0
    for cell in expand(spec):
        src, dst = cell_file(source, cell.cell_id), cell_file(dest, cell.cell_id)
        if not src.exists() or (dst.exists() and src.resolve() != dst.resolve()):
            continue
        row = json.loads(src.read_text())
        why = checkable(row)
        if why is not None:
            print(f"refused {cell.cell_id}: {why}", file=sys.stderr)
            refused += 1
            continue
        atomic_write_json(dst, relative_paths(upgrade_record(row), prefix, new_prefix))
        copied += 1
    ids = [c.cell_id for c in expand(spec)]
    atomic_write_json(dest / SWEEP_JSON, spec.to_dict())
    atomic_write_yaml(dest / SWEEP_YAML, spec.to_dict())
    atomic_write_csv(dest / RESULTS_CSV, load_results(dest, cell_ids=ids))
    done = sum(cell_file(dest, i).exists() for i in ids)
    print(f"{copied} cells copied, {refused} refused; {done} of {len(ids)} cells of {spec.name} in {new_prefix}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
