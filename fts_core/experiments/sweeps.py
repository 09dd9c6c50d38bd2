"""Sweeps: a grid of runs (or notebook executions), resumable, on Ray or in-process.

A sweep file (YAML, :class:`SweepSpec`) names what one *cell* executes (``run:``, by default
``fts_core:run``, or ``notebook:``), a ``base`` configuration and a ``grid`` (or a list of grids)
whose cartesian product gives the cells; :func:`expand` lists them, each with an id that is a
function of its parameters. :func:`sweep` runs the cells without a result (``resume=True`` also
retries failed and interrupted ones) on Ray or, with ``backend="serial"``, in this process, and
returns the results table (:func:`fts_core.experiments.results.load_results`). The worker that
finishes a cell writes its row itself (files: :mod:`fts_core.io`). Sweep-file keys, the sweep
directory, resuming, locks and clusters: ``book/reproducibility.md``, "Sweeps on Ray".
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml
from tqdm.auto import tqdm

from fts_core.experiments.cells import (
    CellTask,
    execute_cell,
    finished_row,
    import_modules,
    record_lost_cell,
    resolve_callable,
)
from fts_core.experiments.config import RunConfig
from fts_core.experiments.results import load_results
from fts_core.hints import unknown_names
from fts_core.io import (
    FAILURES_DIR,
    RESULTS_CSV,
    SWEEP_JSON,
    SWEEP_YAML,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_yaml,
    cell_file,
    failure_file,
    git_revision,
    json_default,
    load_yaml_mapping,
)
from fts_core.setup.data import check_available

DEFAULT_FUNCTION = "fts_core:run"  # the public name: stable however the package is laid out
_DEFAULT_ALIASES = ("fts_core.experiments.runner:run",)  # the same function, by its module
_SPEC_KEYS = ("name", "out_dir", "run", "notebook", "base", "grid", "resources", "ray", "notebook_cwd", "imports")
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
    #: one grid (key -> list of values, cartesian product) or a list of grids (union of their products)
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]] = field(default_factory=dict)
    run: str = DEFAULT_FUNCTION
    notebook: str | None = None
    notebook_cwd: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] = field(default_factory=dict)
    #: modules every worker imports before a cell (where user-registered criteria/models live)
    imports: list[str] = field(default_factory=list)
    #: where relative paths start: the sweep file's folder (:meth:`from_yaml`); None: the cwd
    folder: str | None = None

    @property
    def kind(self) -> str:
        return "notebook" if self.notebook else "run"

    @property
    def grids(self) -> list[dict[str, list[Any]]]:
        """The grid as a list of grids (a single grid is a list of one)."""
        return list(self.grid) if isinstance(self.grid, list) else [self.grid]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, default_name: str = "sweep") -> "SweepSpec":
        unknown = sorted(set(d) - set(_SPEC_KEYS))
        if unknown:
            raise ValueError(f"unknown sweep key(s) {unknown_names(unknown, _SPEC_KEYS)}; allowed: {list(_SPEC_KEYS)}")
        if d.get("run") and d.get("notebook"):
            raise ValueError("a sweep names either `run` or `notebook`, not both")
        base = d.get("base") or {}
        if not isinstance(base, Mapping):
            raise ValueError(f"sweep `base` must be a mapping of keys to values, got {type(base).__name__}")
        base = dict(base)
        raw = d.get("grid") or {}
        parts = raw if isinstance(raw, list) else [raw]
        grids = [_check_grid(part, base, i if isinstance(raw, list) else None) for i, part in enumerate(parts)]
        grid: dict[str, list[Any]] | list[dict[str, list[Any]]] = grids if isinstance(raw, list) else grids[0]
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
            run=DEFAULT_FUNCTION if d.get("run") in (None, "", *_DEFAULT_ALIASES) else str(d["run"]),
            notebook=d.get("notebook"),
            notebook_cwd=d.get("notebook_cwd"),
            resources=resources,
            ray=dict(d.get("ray") or {}),
            imports=_imports(d.get("imports")),
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "SweepSpec":
        """Read a sweep file; its relative paths (``out_dir``, ``notebook``, ``notebook_cwd``, a
        ``root`` in ``base``) are relative to the file's folder, ``~`` is the home folder."""
        spec = cls.from_dict(load_yaml_mapping(path, what="sweep file"), default_name=Path(path).stem)
        spec.folder = str(Path(path).expanduser().resolve().parent)
        if isinstance(spec.base.get("root"), str):
            spec.base["root"] = str(spec.path(spec.base["root"]))
        return spec

    def path(self, value: str | os.PathLike) -> Path:
        """``value`` as an absolute path: ``~`` expanded, relative to :attr:`folder` (or the cwd)."""
        p = Path(value).expanduser()
        return (p if p.is_absolute() else Path(self.folder or os.getcwd()) / p).resolve()

    @property
    def sweep_dir(self) -> Path:
        """The sweep directory: ``out_dir`` resolved by :meth:`path`."""
        return self.path(self.out_dir)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "out_dir": self.out_dir}
        if self.notebook:
            d["notebook"] = self.notebook
        elif self.run != DEFAULT_FUNCTION:
            d["run"] = self.run
        if self.notebook_cwd:
            d["notebook_cwd"] = self.notebook_cwd
        if self.imports:
            d["imports"] = self.imports
        d.update(base=self.base, grid=self.grid, resources=self.resources, ray=self.ray)
        return d


def _imports(value: Any) -> list[str]:
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"sweep `imports` must be a module name or a list of module names, got {value!r}")
    return list(names)


def _check_grid(grid: Any, base: Mapping[str, Any], index: int | None) -> dict[str, list[Any]]:
    where = "grid" if index is None else f"grid[{index}]"
    if not isinstance(grid, Mapping):
        raise ValueError(f"sweep `{where}` must be a mapping of keys to lists of values, got {type(grid).__name__}")
    out = {}
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ValueError(f"{where}[{key!r}] must be a non-empty list, got {values!r}")
        out[key] = list(values)
    both = sorted(set(base) & set(out))
    if both:
        raise ValueError(f"key(s) {both} appear in both `base` and `{where}`; keep each in one place")
    return out


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
    if params.get("run_name") is not None:
        raise ValueError(f"run_name={params['run_name']!r} in a sweep: each cell names its own run; remove it")
    return RunConfig.from_dict(params).default_run_name()


def expand(spec: SweepSpec) -> list[Cell]:
    """The cells of a sweep, in grid order (first key varies slowest; a list of grids one
    after the other, a cell that two grids share once)."""
    target = spec.notebook or spec.run
    cells, seen = [], set()
    points = (dict(zip(g, values)) for g in spec.grids for values in itertools.product(*g.values()))
    for grid_values in points:
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
# the driver
# --------------------------------------------------------------------------------------
def cell_states(spec: SweepSpec, sweep_dir: Path | None = None) -> dict[str, str]:
    """``{cell_id: "done" | "failed" | "pending"}`` from the files in the sweep directory; a
    damaged row file is set aside and its cell is not done (:func:`finished_row`)."""
    sweep_dir = Path(sweep_dir) if sweep_dir is not None else spec.sweep_dir
    states = {}
    for cell in expand(spec):
        if finished_row(sweep_dir, cell.cell_id) is not None:
            states[cell.cell_id] = "done"
        elif failure_file(sweep_dir, cell.cell_id).exists():
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
        ``pandas.DataFrame``, a row per finished cell of this sweep (see :func:`fts_core.experiments.results.load_results`);
        it is also written to ``<sweep_dir>/results.csv``.
    """
    spec = _as_spec(spec)
    _check_options(backend, address, max_parallel)
    sweep_dir = spec.sweep_dir
    import_modules(spec.imports)  # the names they register must be known to the checks below
    cells = expand(spec)
    states = cell_states(spec, sweep_dir)
    todo = [c for c in cells if states[c.cell_id] != "done"]
    if todo and not resume and any(s != "pending" for s in states.values()):
        raise FileExistsError(
            f"sweep directory {str(sweep_dir)!r} already holds cells ({len(cells) - len(todo)} of {len(cells)} "
            "done); pass resume=True (--resume) to skip finished cells and retry failed ones, or choose "
            "another out_dir")
    tasks = _tasks(spec, todo, sweep_dir)  # checks the target, and every run cell's config and data
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _write_if_changed(sweep_dir / SWEEP_JSON, spec.to_dict(), atomic_write_json)
    _write_if_changed(sweep_dir / SWEEP_YAML, spec.to_dict(), atomic_write_yaml)
    progress = _Progress(spec.name, total=len(cells), done=len(cells) - len(todo), quiet=quiet)
    try:
        if backend == "serial":
            for task in tasks:
                progress.started(1)
                progress.finished(execute_cell(task))
        else:
            _run_on_ray(spec, tasks, progress, address=address, max_parallel=max_parallel, quiet=quiet)
    finally:
        progress.close()
    table = load_results(sweep_dir, cell_ids=[c.cell_id for c in cells])
    if todo or not (sweep_dir / RESULTS_CSV).exists():  # a finished sweep's files stay untouched
        atomic_write_csv(sweep_dir / RESULTS_CSV, table)
    if not quiet:
        _summary_line(spec, sweep_dir, len(cells), progress.claimed)
    if progress.failed_rows:
        raise SweepError(_failure_message(sweep_dir, progress.failed_rows, backend))
    return table


class SweepError(RuntimeError):
    """Some cells of the sweep failed (their rows are in ``failures/``; the others are kept)."""


def _failure_message(sweep_dir: Path, failed: list[Mapping[str, Any]], backend: str) -> str:
    first = failed[0]
    msg = (f"{len(failed)} cell(s) failed, first {first.get('cell_id')}: {first.get('error')}; tracebacks in "
           f"{sweep_dir / FAILURES_DIR}; the finished cells are kept, rerun with --resume (resume=True) to retry")
    if backend == "ray" and any(str(r.get("error", "")).startswith("ValueError: unknown ") for r in failed):
        msg += (". A name registered in your own script is unknown to Ray's worker processes: put the "
                "registration in an importable module and list it under `imports:` in the sweep file (or ship "
                "it with Ray's runtime_env), or call sweep(..., backend='serial') from the script that registers it")
    return msg


def _check_options(backend: str, address: str | None, max_parallel: int | None) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {list(BACKENDS)}")
    if address is not None and backend != "ray":
        raise ValueError("`address` needs backend='ray'")
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")


def _tasks(spec: SweepSpec, todo: list[Cell], sweep_dir: Path) -> list[CellTask]:
    """The tasks of the unfinished cells, after checking that they can run at all."""
    if spec.notebook:
        target = spec.path(spec.notebook)
        if not target.is_file():
            raise FileNotFoundError(f"sweep notebook {spec.notebook!r} does not exist (looked for {str(target)!r})")
        target_name = str(target)
    else:
        resolve_callable(spec.run)  # fail early on a bad target
        target_name = spec.run
        if todo and spec.run == DEFAULT_FUNCTION:
            _preflight(todo)  # every config and its data, before the first cell runs
    notebook_cwd = str(spec.path(spec.notebook_cwd)) if spec.notebook_cwd else None
    driver_git = git_revision()
    return [CellTask(sweep_dir=str(sweep_dir), sweep=spec.name, cell_id=c.cell_id, kind=spec.kind,
                     target=target_name, params=c.params, grid_values=c.grid_values, cwd=os.getcwd(),
                     notebook_cwd=notebook_cwd, driver_git=driver_git, imports=tuple(spec.imports)) for c in todo]


def _summary_line(spec: SweepSpec, sweep_dir: Path, total: int, claimed: int) -> None:
    states = cell_states(spec, sweep_dir)
    counts = {s: sum(v == s for v in states.values()) for s in ("done", "failed", "pending")}
    print(f"sweep {spec.name}: {counts['done']}/{total} done, {counts['failed']} failed, "
          f"{counts['pending']} pending -> {sweep_dir / RESULTS_CSV}", file=sys.stderr)
    if claimed:
        print(f"  {claimed} cell(s) skipped: another process was running them in the same folder", file=sys.stderr)


def _preflight(cells: list[Cell]) -> None:
    """Check every cell's config (names, options) and that its data can be read, before any
    cell runs: a typo in the grid or missing data files fail at once, naming the cell."""
    seen_data = set()
    for cell in cells:
        try:
            cfg = RunConfig.from_dict(cell.params)
            cfg.check_names()
            key = (cfg.dataset, cfg.root, json.dumps(cfg.data_options, sort_keys=True))
            if key not in seen_data:
                seen_data.add(key)
                check_available(cfg.dataset, root=cfg.root, **cfg.data_options)
        except (ValueError, TypeError, FileNotFoundError) as err:
            raise type(err)(f"cell {cell.cell_id}: {err}") from None


def _write_if_changed(path: Path, obj: Any, write: Callable[[Path, Any], Any]) -> None:
    """Rewrite a spec file only when what it would hold changed (a rerun leaves the folder as it was)."""
    plain = json.loads(json.dumps(obj, default=json_default))
    if path.exists():
        try:
            old = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
            if old == plain:
                return
        except (OSError, ValueError, yaml.YAMLError):
            pass
    write(path, obj)


#: how often a local Ray is started before its startup timeout is final
_RAY_STARTS = 3


def _start_local_ray(ray: Any, kwargs: dict[str, Any], quiet: bool) -> None:
    """``ray.init(**kwargs)`` on this machine; Ray gives its node a fixed 30 s to start, which a
    busy machine can miss, so a startup timeout is retried (``_RAY_STARTS`` starts in all)."""
    for start in range(1, _RAY_STARTS + 1):
        try:
            ray.init(**kwargs)
            return
        except Exception as err:  # noqa: BLE001  (Ray raises a bare Exception for this)
            if "timed out during startup" not in str(err) or start == _RAY_STARTS:
                raise
            ray.shutdown()
            if not quiet:
                print(f"[fts_core.sweep] Ray did not start within its 30 s (a busy machine?); start {start + 1} of "
                      f"{_RAY_STARTS}", file=sys.stderr, flush=True)


def _run_on_ray(spec: SweepSpec, tasks: list[CellTask], progress: "_Progress", *,
                address: str | None, max_parallel: int | None, quiet: bool) -> None:
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
            _start_local_ray(ray, kwargs, quiet)
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
                    row = record_lost_cell(task, err)
                done = cell_file(task.sweep_dir, task.cell_id)
                if row.get("status") == "done" and not done.exists():  # a node without the shared filesystem
                    atomic_write_json(done, row)
                progress.finished(row)
            progress.refresh()
    finally:
        if started_here:
            ray.shutdown()


class _Progress:
    """done / running / failed counts with an ETA (a tqdm bar on stderr; silent when quiet)."""

    def __init__(self, name: str, total: int, done: int, quiet: bool):
        self.total, self.done, self.running, self.failed, self.claimed = total, done, 0, 0, 0
        self.failed_rows: list[Mapping[str, Any]] = []
        self.bar = None
        if not quiet:
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
        elif row.get("status") == "claimed":  # another process on the same folder runs it
            self.claimed += 1
            if self.bar is not None:
                self.bar.write(f"cell {row.get('cell_id')} skipped: {row.get('error')}")
        else:
            self.failed += 1
            self.failed_rows.append(row)
            if self.bar is not None:
                self.bar.write(f"cell {row.get('cell_id')} failed: {row.get('error')}")
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, running=self.running, failed=self.failed, skipped=self.claimed,
                                 refresh=False)
            self.bar.update(1 if row.get("status") == "done" else 0)
            self.bar.refresh()

    def refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, running=self.running, failed=self.failed, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
