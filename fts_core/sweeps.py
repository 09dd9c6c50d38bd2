"""Sweeps: a grid of runs (or notebook executions), resumable, on Ray or in-process.

A sweep file (YAML) names what one *cell* of the grid executes, a base configuration and a
grid whose cartesian product gives the cells::

    name: example_digits
    out_dir: results/sweeps/example_digits   # the sweep directory (relative to the cwd)
    run: fts_core.runner:run                 # default; or `notebook: notebooks/04_experiments.ipynb`
    base: {dataset: digits, model: resnet18, width: 0.125, epochs: 1}
    grid: {criterion: [fts, snip], sparsity: [0.9, 0.95], seed: [0, 42]}
    resources: {num_cpus: 1, num_gpus: auto} # per cell; auto = 1 GPU per cell when GPUs exist
    ray: {num_cpus: 2}                       # ray.init options for the embedded instance

Sweep directory layout (everything a cell produces is written atomically: temp file + rename)::

    sweep.yaml            the spec as last run
    cells/<cell_id>.json  one finished cell: params, result, timings, git revision, versions, device
    failures/<cell_id>.json  the traceback of the last failed attempt (removed once the cell succeeds)
    runs/                 run directories of `run` cells (checkpoints; a retried cell resumes)
    notebooks/<cell_id>.ipynb, summaries/<cell_id>.json   outputs of `notebook` cells
    results.csv           the results table, a row per finished cell (rebuilt from cells/)

The worker that finishes a cell writes its row file itself, so killing the driver
(even ``kill -9``) loses no finished cell; the cell id is a function of the cell's
parameters, so a cell can never be recorded twice. The next ``--resume`` invocation skips
finished cells and retries failed or interrupted ones.

Scaling out with Ray: by default an embedded local Ray instance is started (all local
CPUs; one cell per GPU when there are GPUs). To use a cluster::

    ray start --head --port=6379                 # on the head node
    ray start --address=HEAD_IP:6379             # on every other node
    python -m fts_core sweep SWEEP.yaml --address HEAD_IP:6379 --resume   # anywhere in the cluster

Every node needs the same Python environment with ``fts_core`` installed and the data under
the same path; put ``out_dir`` on a filesystem shared by all nodes (NFS) so that checkpoints
and rows written by workers are visible everywhere (the driver also writes each row it
receives, so without a shared filesystem only the mid-run checkpoints stay on the nodes).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

DEFAULT_FUNCTION = "fts_core.runner:run"
_SPEC_KEYS = ("name", "out_dir", "run", "notebook", "base", "grid", "resources", "ray", "notebook_cwd")
_RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory")
BACKENDS = ("ray", "serial")


# --------------------------------------------------------------------------------------
# the sweep specification
# --------------------------------------------------------------------------------------
@dataclass
class SweepSpec:
    """A parsed sweep file. ``run`` is ``"module:function"``; ``notebook`` (a path) wins if set."""

    name: str
    out_dir: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    run: str = DEFAULT_FUNCTION
    notebook: str | None = None
    notebook_cwd: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "notebook" if self.notebook else "run"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, default_name: str = "sweep") -> "SweepSpec":
        unknown = sorted(set(d) - set(_SPEC_KEYS))
        if unknown:
            raise ValueError(f"unknown sweep key(s) {unknown}; allowed: {list(_SPEC_KEYS)}")
        if d.get("run") and d.get("notebook"):
            raise ValueError("a sweep names either `run` or `notebook`, not both")
        grid = dict(d.get("grid") or {})
        for key, values in grid.items():
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ValueError(f"grid[{key!r}] must be a non-empty list, got {values!r}")
            grid[key] = list(values)
        base = dict(d.get("base") or {})
        both = sorted(set(base) & set(grid))
        if both:
            raise ValueError(f"key(s) {both} appear in both `base` and `grid`; keep each in one place")
        resources = dict(d.get("resources") or {})
        bad = sorted(set(resources) - set(_RESOURCE_KEYS))
        if bad:
            raise ValueError(f"unknown resources key(s) {bad}; allowed: {list(_RESOURCE_KEYS)}")
        name = str(d.get("name") or default_name)
        return cls(
            name=name,
            out_dir=str(d.get("out_dir") or Path("results") / "sweeps" / name),
            base=base,
            grid=grid,
            run=str(d.get("run") or DEFAULT_FUNCTION),
            notebook=d.get("notebook"),
            notebook_cwd=d.get("notebook_cwd"),
            resources=resources,
            ray=dict(d.get("ray") or {}),
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "SweepSpec":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"sweep file {str(path)!r} does not exist")
        with open(path) as fh:
            d = yaml.safe_load(fh) or {}
        if not isinstance(d, dict):
            raise ValueError(f"sweep file {str(path)!r} must hold a mapping, got {type(d).__name__}")
        return cls.from_dict(d, default_name=path.stem)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "out_dir": self.out_dir}
        d["notebook" if self.notebook else "run"] = self.notebook or self.run
        if self.notebook_cwd:
            d["notebook_cwd"] = self.notebook_cwd
        d.update(base=self.base, grid=self.grid, resources=self.resources, ray=self.ray)
        return d


@dataclass(frozen=True)
class Cell:
    """One grid point: ``params`` = base updated by the grid values; ``cell_id`` is stable."""

    cell_id: str
    params: dict[str, Any]
    grid_values: dict[str, Any]


def _slug(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(_slug(v) for v in value)
    text = str(value)
    return "".join(c if (c.isalnum() or c in "._+") else "_" for c in text)


def cell_id_for(params: Mapping[str, Any], grid_values: Mapping[str, Any], target: str) -> str:
    """``key=value-...-<hash8>``: readable grid values + a hash of everything that defines the cell."""
    canonical = json.dumps({"target": target, "params": params}, sort_keys=True, default=str)
    digest = hashlib.sha1(canonical.encode()).hexdigest()[:8]
    readable = "-".join(f"{k}={_slug(v)}" for k, v in grid_values.items())[:150]
    return f"{readable}-{digest}" if readable else digest


def run_cell_id(params: Mapping[str, Any]) -> str:
    """Id of a cell that calls :func:`fts_core.run`: the run's own name (config hash included).

    Equal configs get equal ids in every sweep and notebook (out_dir, root, device and quiet
    do not count), so results can be shared; an invalid config raises ``ValueError`` here.
    """
    from fts_core.config import RunConfig

    if params.get("run_name") is not None:
        raise ValueError(f"run_name={params['run_name']!r} in a sweep: each cell names its own run; remove it")
    return RunConfig.from_dict(params).default_run_name()


def expand(spec: SweepSpec) -> list[Cell]:
    """The cells of a sweep, in grid order (first key varies slowest)."""
    keys = list(spec.grid)
    target = spec.notebook or spec.run
    cells, seen = [], set()
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        grid_values = dict(zip(keys, values))
        params = {**spec.base, **grid_values}
        if not spec.notebook and target == DEFAULT_FUNCTION:
            cid = run_cell_id(params)
        else:
            cid = cell_id_for(params, grid_values, Path(target).name if spec.notebook else target)
        if cid in seen:  # a repeated value in a grid list
            continue
        seen.add(cid)
        cells.append(Cell(cid, params, grid_values))
    return cells


# --------------------------------------------------------------------------------------
# small helpers (also used by the workers)
# --------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temp file in the same folder + rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


_GIT_CACHE: dict[str, Any] = {}


def git_revision() -> dict[str, Any]:
    """``{"git_revision": sha or None, "git_dirty": bool or None}`` of the fts_core checkout (read-only git)."""
    if not _GIT_CACHE:
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never touch the index
        try:
            sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                 text=True, timeout=10, env=env)
            if sha.returncode != 0:
                raise OSError(sha.stderr)
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10, env=env)
            _GIT_CACHE.update(git_revision=sha.stdout.strip(), git_dirty=bool(dirty.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            _GIT_CACHE.update(git_revision=None, git_dirty=None)
    return dict(_GIT_CACHE)


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on (only those importable)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("fts-core", "torch", "torchvision", "numpy", "ray", "papermill"):
        try:
            versions[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def device_description(params: Mapping[str, Any], result: Mapping[str, Any] | None = None) -> str:
    """Human-readable device of a cell: the GPU name, or ``cpu (<processor>, N threads)``."""
    requested = str((result or {}).get("device") or params.get("device", "auto"))
    try:
        import torch

        if requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available()):
            if torch.cuda.is_available():
                index = torch.device(requested).index if requested.startswith("cuda:") else 0
                return f"cuda ({torch.cuda.get_device_name(index or 0)})"
        threads = torch.get_num_threads()
    except Exception:  # pragma: no cover - torch missing on a notebook-only worker
        threads = os.cpu_count()
    proc = platform.processor() or platform.machine()
    return f"cpu ({proc}, {threads} threads)"


def _resolve_callable(target: str) -> Callable[..., Any]:
    if ":" not in target:
        raise ValueError(f"run target {target!r} must look like 'package.module:function'")
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"run target {target!r} is not callable")
    return obj


# --------------------------------------------------------------------------------------
# one cell (runs in a Ray worker or in-process)
# --------------------------------------------------------------------------------------
def execute_cell(task: dict[str, Any]) -> dict[str, Any]:
    """Execute one cell and write its row (``cells/<id>.json``) or failure record atomically.

    ``task`` keys: sweep_dir, sweep, cell_id, kind ("run" | "notebook"), target, params,
    grid_values, cwd, notebook_cwd, driver_git. Returns the row (``status`` "done" | "failed");
    never raises for a failure of the cell itself.
    """
    sweep_dir = Path(task["sweep_dir"])
    cid = task["cell_id"]
    cell_file = sweep_dir / "cells" / f"{cid}.json"
    fail_file = sweep_dir / "failures" / f"{cid}.json"
    if cell_file.exists():  # finished meanwhile (e.g. by a previous driver's worker)
        with open(cell_file) as fh:
            return json.load(fh)
    old_cwd = os.getcwd()
    if task.get("cwd") and os.path.isdir(task["cwd"]):
        os.chdir(task["cwd"])
    params = dict(task["params"])
    attempts = 1
    if fail_file.exists():
        try:
            with open(fail_file) as fh:
                attempts = int(json.load(fh).get("attempts", 0)) + 1
        except (OSError, ValueError):
            pass
    row: dict[str, Any] = {
        "cell_id": cid,
        "sweep": task.get("sweep"),
        "kind": task["kind"],
        "target": task["target"],
        "params": params,
        "grid": task.get("grid_values", {}),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "attempts": attempts,
        "started": _now(),
    }
    t0 = time.perf_counter()
    try:
        if task["kind"] == "notebook":
            result, extra = _execute_notebook(task, params, sweep_dir)
            row.update(extra)
        else:
            call = dict(params)
            call.setdefault("out_dir", str(sweep_dir / "runs"))
            call.setdefault("quiet", True)
            result = _resolve_callable(task["target"])(call)
        row["status"] = "done"
        row["result"] = result if isinstance(result, Mapping) else {"value": result}
        row["error"] = None
    except Exception as err:  # the cell failed: record it, keep the sweep going
        row["status"] = "failed"
        row["result"] = None
        row["error"] = f"{type(err).__name__}: {err}"
        row["traceback"] = traceback.format_exc()
    finally:
        os.chdir(old_cwd)
    row["finished"] = _now()
    row["seconds"] = round(time.perf_counter() - t0, 3)
    git = git_revision()
    if git["git_revision"] is None:
        git = dict(task.get("driver_git") or git)
    row.update(git)
    row["versions"] = library_versions()
    row["device"] = device_description(params, row["result"] if row["status"] == "done" else None)
    if row["status"] == "done":
        atomic_write_json(cell_file, row)
        fail_file.unlink(missing_ok=True)
    else:
        atomic_write_json(fail_file, row)
    return row


def _execute_notebook(task: dict[str, Any], params: dict[str, Any], sweep_dir: Path):
    """One papermill execution; metrics = the notebook's ``summary_json``."""
    import papermill as pm

    cid = task["cell_id"]
    out_nb = sweep_dir / "notebooks" / f"{cid}.ipynb"
    summary = sweep_dir / "summaries" / f"{cid}.json"
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    summary.parent.mkdir(parents=True, exist_ok=True)
    params.setdefault("summary_json", str(summary))
    params.setdefault("interactive", False)
    notebook = Path(task["target"])
    cwd = task.get("notebook_cwd") or str(notebook.parent)
    pm.execute_notebook(str(notebook), str(out_nb), parameters=params, cwd=cwd,
                        progress_bar=False, log_output=False)
    result: dict[str, Any] = {}
    summary_path = Path(params["summary_json"])
    if not summary_path.is_absolute():
        summary_path = Path(cwd) / summary_path
    if summary_path.is_file():
        with open(summary_path) as fh:
            result = json.load(fh)
    return result, {"notebook_output": str(out_nb)}


# --------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------
def cell_states(spec: SweepSpec, sweep_dir: Path | None = None) -> dict[str, str]:
    """``{cell_id: "done" | "failed" | "pending"}`` from the files in the sweep directory."""
    sweep_dir = Path(sweep_dir or spec.out_dir)
    states = {}
    for cell in expand(spec):
        if (sweep_dir / "cells" / f"{cell.cell_id}.json").exists():
            states[cell.cell_id] = "done"
        elif (sweep_dir / "failures" / f"{cell.cell_id}.json").exists():
            states[cell.cell_id] = "failed"
        else:
            states[cell.cell_id] = "pending"
    return states


def _as_spec(spec: "SweepSpec | Mapping[str, Any] | str | os.PathLike") -> SweepSpec:
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, Mapping):
        return SweepSpec.from_dict(spec)
    return SweepSpec.from_yaml(spec)


def sweep(
    spec: "SweepSpec | Mapping[str, Any] | str | os.PathLike",
    *,
    address: str | None = None,
    resume: bool = False,
    max_parallel: int | None = None,
    backend: str = "ray",
    quiet: bool = False,
):
    """Run every cell of a sweep that has no result yet; return the results table.

    Args:
        spec: a sweep file path, a mapping with the sweep-file keys, or a :class:`SweepSpec`.
        address: Ray cluster address (``"auto"``, ``"HOST:6379"``); ``None`` starts an
            embedded local Ray instance (``backend="ray"`` only).
        resume: the sweep directory may already hold cells (finished ones are skipped, failed
            ones retried). Without it a non-empty sweep directory is an error.
        max_parallel: most cells in flight (default: one per GPU, else one per ``num_cpus``).
        backend: ``"ray"`` or ``"serial"`` (in-process, one cell after the other, no Ray).
        quiet: no progress bar / summary line.

    Returns:
        ``pandas.DataFrame``, a row per finished cell of this sweep (see :func:`fts_core.results.load_results`);
        it is also written to ``<sweep_dir>/results.csv``.
    """
    spec = _as_spec(spec)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {list(BACKENDS)}")
    if address is not None and backend != "ray":
        raise ValueError("`address` needs backend='ray'")
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
    cwd = os.getcwd()
    sweep_dir = Path(spec.out_dir).expanduser()
    sweep_dir = (sweep_dir if sweep_dir.is_absolute() else Path(cwd) / sweep_dir).resolve()
    notebook = None
    if spec.notebook:
        notebook = Path(spec.notebook).expanduser().resolve()
        if not notebook.is_file():
            raise FileNotFoundError(f"sweep notebook {spec.notebook!r} does not exist (cwd {cwd})")
    else:
        _resolve_callable(spec.run)  # fail early on a bad target

    cells = expand(spec)
    states = cell_states(spec, sweep_dir)
    existing = any((sweep_dir / "cells").glob("*.json")) or any((sweep_dir / "failures").glob("*.json"))
    if existing and not resume:
        raise FileExistsError(
            f"sweep directory {str(sweep_dir)!r} already holds cells; pass resume=True (--resume) "
            "to skip finished cells and retry failed ones, or choose another out_dir")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sweep_dir / "sweep.json", spec.to_dict())
    _write_yaml(sweep_dir / "sweep.yaml", spec.to_dict())

    todo = [c for c in cells if states[c.cell_id] != "done"]
    driver_git = git_revision()
    tasks = [
        {
            "sweep_dir": str(sweep_dir), "sweep": spec.name, "cell_id": c.cell_id, "kind": spec.kind,
            "target": str(notebook) if notebook else spec.run, "params": c.params,
            "grid_values": c.grid_values, "cwd": cwd,
            "notebook_cwd": str(Path(spec.notebook_cwd).resolve()) if spec.notebook_cwd else None,
            "driver_git": driver_git,
        }
        for c in todo
    ]
    progress = _Progress(spec.name, total=len(cells), done=len(cells) - len(todo), quiet=quiet)
    try:
        if backend == "serial":
            for task in tasks:
                progress.started(1)
                progress.finished(execute_cell(task))
        else:
            _run_on_ray(spec, tasks, progress, address=address, max_parallel=max_parallel,
                        quiet=quiet, sweep_dir=sweep_dir)
    finally:
        progress.close()

    from fts_core.results import load_results

    table = load_results(sweep_dir, cell_ids=[c.cell_id for c in cells])
    _atomic_write_csv(sweep_dir / "results.csv", table)
    if not quiet:
        states = cell_states(spec, sweep_dir)
        counts = {s: sum(v == s for v in states.values()) for s in ("done", "failed", "pending")}
        print(f"sweep {spec.name}: {counts['done']}/{len(cells)} done, {counts['failed']} failed, "
              f"{counts['pending']} pending -> {sweep_dir / 'results.csv'}", file=sys.stderr)
        if counts["failed"]:
            print(f"  tracebacks in {sweep_dir / 'failures'}; rerun with --resume to retry", file=sys.stderr)
    return table


def _run_on_ray(spec: SweepSpec, tasks: list[dict[str, Any]], progress: "_Progress", *,
                address: str | None, max_parallel: int | None, quiet: bool, sweep_dir: Path) -> None:
    import ray  # lazy: only sweeps on Ray need it

    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet,
                                  "configure_logging": True}
        if quiet:
            kwargs["logging_level"] = "warning"
        kwargs.update(spec.ray)
        if address is not None:
            for key in ("num_cpus", "num_gpus", "object_store_memory", "include_dashboard", "resources"):
                kwargs.pop(key, None)  # a running cluster fixes these
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
        started_here = True
    try:
        cluster = ray.cluster_resources()
        gpus = int(cluster.get("GPU", 0))
        num_cpus = float(spec.resources.get("num_cpus", 1))
        num_gpus = spec.resources.get("num_gpus", "auto")
        num_gpus = (1 if gpus > 0 else 0) if num_gpus == "auto" else float(num_gpus)
        if num_gpus > gpus:
            raise ValueError(f"each cell asks for {num_gpus} GPU(s) but the Ray cluster has {gpus}")
        if max_parallel is None:
            slots = gpus / num_gpus if num_gpus else cluster.get("CPU", 1) / max(num_cpus, 1e-9)
            max_parallel = max(1, int(slots))
        options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
        if "memory" in spec.resources:
            options["memory"] = int(spec.resources["memory"])
        # Ray sets OMP_NUM_THREADS (torch's thread count) to the task's num_cpus
        remote = ray.remote(execute_cell).options(**options)
        pending = list(tasks)
        in_flight: dict[Any, dict[str, Any]] = {}
        while pending or in_flight:
            while pending and len(in_flight) < max_parallel:
                task = pending.pop(0)
                in_flight[remote.remote(task)] = task
                progress.started(1)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=5.0)
            for ref in ready:
                task = in_flight.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as err:  # the worker process died (OOM, node lost, ...)
                    row = _record_lost_cell(task, err)
                if row.get("status") == "done":
                    cell_file = sweep_dir / "cells" / f"{task['cell_id']}.json"
                    if not cell_file.exists():  # a worker on a node without the shared filesystem
                        atomic_write_json(cell_file, row)
                progress.finished(row)
            progress.refresh()
    finally:
        if started_here:
            ray.shutdown()


def _record_lost_cell(task: dict[str, Any], err: BaseException) -> dict[str, Any]:
    row = {"cell_id": task["cell_id"], "sweep": task.get("sweep"), "kind": task["kind"],
           "params": task["params"], "status": "failed", "result": None,
           "error": f"{type(err).__name__}: {err}", "traceback": "".join(traceback.format_exception(err)),
           "finished": _now()}
    atomic_write_json(Path(task["sweep_dir"]) / "failures" / f"{task['cell_id']}.json", row)
    return row


def _write_yaml(path: Path, obj: Any) -> None:
    import yaml

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        yaml.safe_dump(json.loads(json.dumps(obj, default=_json_default)), fh, sort_keys=False)
    os.replace(tmp, path)


def _atomic_write_csv(path: Path, table) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scalar = [c for c in table.columns
              if not table[c].map(lambda v: isinstance(v, (dict, list, tuple))).any()]
    table[scalar].to_csv(tmp, index=False)
    os.replace(tmp, path)


class _Progress:
    """done / running / failed counts with an ETA (a tqdm bar on stderr; silent when quiet)."""

    def __init__(self, name: str, total: int, done: int, quiet: bool):
        self.total, self.done, self.running, self.failed = total, done, 0, 0
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=f"sweep {name}", unit="cell",
                            dynamic_ncols=True, smoothing=0.0)
            self.refresh()

    def started(self, n: int) -> None:
        self.running += n
        self.refresh()

    def finished(self, row: Mapping[str, Any]) -> None:
        self.running -= 1
        if row.get("status") == "done":
            self.done += 1
        else:
            self.failed += 1
            if self.bar is not None:
                self.bar.write(f"cell {row.get('cell_id')} failed: {row.get('error')}")
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, running=self.running, failed=self.failed, refresh=False)
            self.bar.update(1 if row.get("status") == "done" else 0)
            self.bar.refresh()

    def refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, running=self.running, failed=self.failed, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------
def _cmd_sweep(args: argparse.Namespace) -> int:
    spec = SweepSpec.from_yaml(args.spec)
    if args.out_dir:
        spec.out_dir = args.out_dir
    if args.status:
        states = cell_states(spec)
        for cid, state in states.items():
            print(f"{state:8s} {cid}")
        counts = {s: sum(v == s for v in states.values()) for s in ("done", "failed", "pending")}
        print(f"{counts['done']} done, {counts['failed']} failed, {counts['pending']} pending "
              f"of {len(states)} cells in {spec.out_dir}")
        return 0
    sweep(spec, address=args.address, resume=args.resume, max_parallel=args.max_parallel,
          backend="serial" if args.serial else "ray", quiet=args.quiet)
    states = cell_states(spec)
    return 0 if all(s == "done" for s in states.values()) else 1


def add_cli(subparsers: Any) -> None:
    """Register ``python -m fts_core sweep SWEEP.yaml [--address ADDR] [--resume] [--max-parallel N]``."""
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of runs or notebooks on Ray (resumable)",
        description="Run every cell of a sweep file that has no result yet, on an embedded local Ray "
                    "instance or an existing Ray cluster (--address). Finished cells are written "
                    "by the workers, so an interrupted sweep loses nothing: rerun with --resume.",
        epilog="cluster: `ray start --head --port=6379` on the head node, `ray start --address=HEAD:6379` "
               "on the others (same environment, shared filesystem for out_dir), then "
               "`python -m fts_core sweep SWEEP.yaml --address HEAD:6379 --resume`. "
               "Exit status 1 when some cell failed.",
    )
    p.add_argument("spec", help="sweep YAML file")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto or HOST:6379); "
                   "default: start an embedded local Ray instance")
    p.add_argument("--resume", action="store_true",
                   help="continue in a sweep directory that already has cells (skip finished, retry failed)")
    p.add_argument("--max-parallel", type=int, default=None, metavar="N",
                   help="at most N cells at a time (default: one per GPU, else one per CPU slot)")
    p.add_argument("--out-dir", default=None, help="override the sweep file's out_dir")
    p.add_argument("--serial", action="store_true", help="run in this process, no Ray")
    p.add_argument("--status", action="store_true", help="list the cells and their state; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sweep)
