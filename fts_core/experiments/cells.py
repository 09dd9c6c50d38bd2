"""One cell of a sweep, executed in a Ray worker or in-process: its task and its row.

The worker that finishes a cell writes the cell's row itself (``cells/<cell id>.json``,
atomically), so killing the sweep's driver loses no finished cell; a failure is written to
``failures/<cell id>.json`` with its traceback and retried by the next ``--resume``.

A row holds the cell's parameters and grid values, the result (a run's ``result.json``, or a
notebook's summary), and provenance: host, process, attempts, start and finish times,
``seconds`` (wall) and ``cpu_seconds`` (all threads of the process), the git revision, library
versions and the device.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import socket
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from fts_core.experiments.claims import Claimed, claim
from fts_core.io import (
    CELL_ROW,
    FAILURE_ROW,
    CELLS_DIR,
    NOTEBOOKS_DIR,
    RUNS_DIR,
    SUMMARIES_DIR,
    DamagedFileError,
    DamagedFileWarning,
    atomic_write_json,
    cell_file,
    claim_file,
    failure_file,
    provenance,
    read_record,
    remove_stale_temporaries,
    set_aside,
)

__all__ = ["CellTask", "execute_cell", "finished_row", "import_modules", "record_lost_cell",
           "resolve_callable"]


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to execute one cell (picklable, so it travels to Ray workers).

    kind: ``"run"`` (call ``target``, a ``"module:function"``, with the params) or ``"notebook"``
    (execute the notebook at path ``target`` with papermill); cwd: the directory the cell runs in;
    notebook_cwd: the notebook's working directory (default: its folder); driver_git: the driver's
    git revision, used when the worker's checkout has none; imports: modules imported first (the
    sweep file's ``imports``: where user-registered criteria and models live).
    """

    sweep_dir: str
    sweep: str
    cell_id: str
    kind: str
    target: str
    params: dict[str, Any]
    grid_values: dict[str, Any] = field(default_factory=dict)
    cwd: str | None = None
    notebook_cwd: str | None = None
    driver_git: dict[str, Any] = field(default_factory=dict)
    imports: tuple[str, ...] = ()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def import_modules(names: Iterable[str]) -> None:
    """Import each module (``ValueError`` naming the one that does not import)."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ValueError(f"sweep `imports`: module {name!r} does not import ({err}); it must be importable "
                             "where the cells run (on sys.path / PYTHONPATH, or in Ray's runtime_env)") from None


def resolve_callable(target: str) -> Callable[..., Any]:
    """The function named ``"package.module:function"`` (``ValueError`` naming what is wrong)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"sweep `run: {target}` must look like 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as err:
        raise ValueError(f"sweep `run: {target}`: module {module!r} does not import ({err})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"sweep `run: {target}`: {module!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"sweep `run: {target}` is not callable")
    return obj


def finished_row(sweep_dir: str | Path, cell_id: str) -> dict[str, Any] | None:
    """The cell's stored row if it is a valid finished row, else None; a damaged row file is set
    aside (``<cell id>.json.damaged``, see :func:`fts_core.io.set_aside`) with a warning naming
    both paths, so that the cell counts as not done and is redone."""
    path = cell_file(sweep_dir, cell_id)
    if not path.exists():
        return None
    try:
        row = read_record(path, CELL_ROW)
        if row["cell_id"] != cell_id or row["status"] != "done":
            raise DamagedFileError(path, f"holds cell {row['cell_id']!r} with status {row['status']!r}")
        return row
    except DamagedFileError as err:
        moved = set_aside(path)
        where = f"moved to {moved}" if moved else "left in place (read-only folder)"
        warnings.warn(f"damaged cell file {err} ({where}); the cell counts as not done", DamagedFileWarning,
                      stacklevel=2)
        return None


def execute_cell(task: CellTask) -> dict[str, Any]:
    """Execute one cell under its claim and write its row or failure record atomically; returns
    the row (``status`` ``"done"``, ``"failed"``, or ``"claimed"`` when another live process is
    executing it: nothing is run or written then). Never raises for a failure of the cell itself."""
    try:
        with claim(claim_file(task.sweep_dir, task.cell_id), f"cell {task.cell_id}"):
            remove_stale_temporaries(Path(task.sweep_dir) / CELLS_DIR, task.cell_id)
            return _execute_claimed(task)
    except Claimed as err:
        return {"cell_id": task.cell_id, "sweep": task.sweep, "status": "claimed", "error": str(err)}


def _execute_claimed(task: CellTask) -> dict[str, Any]:
    done = cell_file(task.sweep_dir, task.cell_id)
    stored = finished_row(task.sweep_dir, task.cell_id)
    if stored is not None:  # finished meanwhile (e.g. by another sweep on the same folder)
        return stored
    row = _new_row(task)
    old_cwd = os.getcwd()
    if task.cwd and os.path.isdir(task.cwd):
        os.chdir(task.cwd)
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        result, extra = _execute(task)
        row.update(extra, status="done", result=result if isinstance(result, Mapping) else {"value": result},
                   error=None)
    except Exception as err:  # the cell failed: record it, keep the sweep going
        row.update(status="failed", result=None, error=f"{type(err).__name__}: {err}",
                   traceback=traceback.format_exc())
    finally:
        os.chdir(old_cwd)
    row.update(finished=_now(), seconds=round(time.perf_counter() - t0, 3),
               cpu_seconds=round(time.process_time() - cpu0, 3))
    row["provenance"] = _provenance_once(row, task)
    if row["status"] == "done":
        atomic_write_json(done, row)
        failure_file(task.sweep_dir, task.cell_id).unlink(missing_ok=True)
    else:
        atomic_write_json(failure_file(task.sweep_dir, task.cell_id), row)
    return row


def _provenance_once(row: dict[str, Any], task: CellTask) -> dict[str, Any]:
    """The cell's provenance, stored once in the row: a run result's own (moved out of the
    row's copy of the result), else this process's; the driver's git revision where this
    process sees no checkout (a Ray worker)."""
    result = row["result"]
    found = None
    if isinstance(result, Mapping) and isinstance(result.get("provenance"), Mapping):
        row["result"] = {k: v for k, v in result.items() if k != "provenance"}
        found = dict(result["provenance"])
    found = found or provenance("cpu", task.driver_git)
    if found.get("git_revision") is None and task.driver_git:
        found.update(git_revision=task.driver_git.get("git_revision"), git_dirty=task.driver_git.get("git_dirty"))
    return found


def record_lost_cell(task: CellTask, err: BaseException) -> dict[str, Any]:
    """The failure row of a cell whose worker process died (out of memory, node lost, ...)."""
    row = {"cell_id": task.cell_id, "sweep": task.sweep, "kind": task.kind, "params": task.params,
           "status": "failed", "result": None, "error": f"{type(err).__name__}: {err}",
           "traceback": "".join(traceback.format_exception(err)), "finished": _now()}
    atomic_write_json(failure_file(task.sweep_dir, task.cell_id), row)
    return row


def _new_row(task: CellTask) -> dict[str, Any]:
    attempts = 1
    failed = failure_file(task.sweep_dir, task.cell_id)
    if failed.exists():
        try:
            attempts = int(read_record(failed, FAILURE_ROW).get("attempts", 0)) + 1
        except (OSError, ValueError, TypeError):  # a damaged failure record only loses the count
            pass
    return {"cell_id": task.cell_id, "sweep": task.sweep, "kind": task.kind, "target": task.target,
            "params": dict(task.params), "grid": dict(task.grid_values), "hostname": socket.gethostname(),
            "pid": os.getpid(), "attempts": attempts, "started": _now()}


def _execute(task: CellTask) -> tuple[Any, dict[str, Any]]:
    """The cell's result and extra row entries."""
    import_modules(task.imports)
    if task.kind == "notebook":
        return _execute_notebook(task)
    call = dict(task.params)
    call.setdefault("out_dir", str(Path(task.sweep_dir) / RUNS_DIR))
    call.setdefault("quiet", True)
    return resolve_callable(task.target)(call), {}


def _execute_notebook(task: CellTask) -> tuple[dict[str, Any], dict[str, Any]]:
    """One papermill execution; its result is the notebook's ``summary_json``."""
    import papermill as pm  # only notebook sweeps need it

    sweep_dir = Path(task.sweep_dir)
    out_nb = sweep_dir / NOTEBOOKS_DIR / f"{task.cell_id}.ipynb"
    summary = sweep_dir / SUMMARIES_DIR / f"{task.cell_id}.json"
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    summary.parent.mkdir(parents=True, exist_ok=True)
    params = {"summary_json": str(summary), "interactive": False, **task.params}
    notebook = Path(task.target)
    cwd = task.notebook_cwd or str(notebook.parent)
    pm.execute_notebook(str(notebook), str(out_nb), parameters=params, cwd=cwd, progress_bar=False, log_output=False)
    summary_path = Path(params["summary_json"])
    if not summary_path.is_absolute():
        summary_path = Path(cwd) / summary_path
    result = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return result, {"notebook_output": str(out_nb)}
