"""Every file a run or a sweep reads or writes: names, atomic writes, YAML, checkpoints, provenance.

A run folder ``out_dir/<run name>/`` holds :data:`RUN_CONFIG`, :data:`RUN_MASK`, ``checkpoint-EEEE.pt``
(EEEE: the epoch just completed, from 0) and, last, :data:`RUN_RESULT`. A sweep folder holds
:data:`SWEEP_YAML` and :data:`SWEEP_JSON` (the spec), ``cells/`` (:func:`cell_file`), ``failures/``
(:func:`failure_file`), ``claims/`` (:func:`claim_file`), ``runs/``, ``notebooks/``, ``summaries/`` and
:data:`RESULTS_CSV`. Every file is written to a temporary name in its folder, fsync'ed and renamed
over the target (``os.replace``): a reader sees the old file or the new one, never half of one. A
checkpoint is ``MAGIC`` + the payload's sha256 (64 hex digits) + newline + the ``torch.save`` payload;
:func:`load_checkpoint` detects a damaged one (``CorruptCheckpointError``) and loads with
``weights_only=True``; :func:`latest_checkpoint` returns the newest that loads, warning about the rest.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

# run folder
RUN_CONFIG, RUN_RESULT, RUN_MASK, RUN_CLAIM = "config.yaml", "result.json", "mask.pt", ".claim"
# sweep folder
SWEEP_YAML, SWEEP_JSON, RESULTS_CSV = "sweep.yaml", "sweep.json", "results.csv"
CELLS_DIR, FAILURES_DIR, RUNS_DIR, CLAIMS_DIR = "cells", "failures", "runs", "claims"
NOTEBOOKS_DIR, SUMMARIES_DIR = "notebooks", "summaries"

MAGIC = b"FTS-CHECKPOINT-v1\n"
_HEX = 64
_NAME = re.compile(r"checkpoint-(\d+)\.pt")


class CorruptCheckpointError(ValueError):
    """The file is not a complete checkpoint written by :func:`save_checkpoint`."""


class DamagedFileError(ValueError):
    """A JSON record (a cell row, a failure row, a run's result) that is not what its name says."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


class DamagedFileWarning(UserWarning):
    """A results file is not valid and does not count (the message names it and says why)."""


# the keys (and their types) a record must hold to count; checked by read_record
CELL_ROW = {"cell_id": str, "status": str, "params": dict, "result": dict}
FAILURE_ROW = {"cell_id": str, "status": str, "error": str}
RUN_RESULT_KEYS = {"run_name": str, "run_dir": str, "config": dict, "test_accuracy_final": (int, float),
                   "test_accuracy_best_val": (int, float), "best_epoch": int, "realised_sparsity": (int, float)}
#: what a record says about the code and machine that made it (:func:`provenance`)
PROVENANCE_KEYS = ("git_revision", "git_dirty", "versions", "device")


# ---------------------------------------------------------------------- atomic files
def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same dir + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_default(obj: Any) -> Any:
    """How numpy/torch numbers and arrays, paths, dataclasses and sets go into JSON."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented, key-sorted JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=json_default))


def atomic_write_yaml(path: str | Path, obj: Any) -> Path:
    """``obj`` (made JSON-plain first) as YAML in its own key order, atomically."""
    plain = json.loads(json.dumps(obj, default=json_default))
    return atomic_write_text(path, yaml.safe_dump(plain, sort_keys=False))


def atomic_write_csv(path: str | Path, table: Any) -> Path:
    """The scalar columns of a pandas table as CSV, atomically (nested values are left out)."""
    scalar = [c for c in table.columns if not table[c].map(lambda v: isinstance(v, (dict, list, tuple))).any()]
    return atomic_write_text(path, table[scalar].to_csv(index=False))


def load_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a YAML file that must hold a non-empty mapping.

    Raises ``FileNotFoundError`` (no such file, or a directory) and ``ValueError`` (not YAML,
    e.g. an image; malformed YAML, with its line; empty; not a mapping), each naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r} is a directory, not a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {str(path)!r} is not a text (YAML) file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{what} {str(path)!r} is not valid YAML{at}: {problem}") from None
    if data is None:
        raise ValueError(f"{what} {str(path)!r} is empty; it must hold a mapping of keys to values "
                         "(e.g. `dataset: digits`)")
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a mapping of keys to values, not a {type(data).__name__}")
    return data


def read_record(path: str | Path, required: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """The JSON object stored at ``path``, holding every ``required`` key with a value of its
    type; :class:`DamagedFileError` naming the file and what is wrong otherwise (truncated,
    random bytes, not an object, a key missing). Records of an earlier layout are read in
    today's (:func:`upgrade_record`)."""
    path = Path(path)
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise DamagedFileError(path, f"not a JSON file ({type(err).__name__}: {str(err)[:80]})") from None
    if not isinstance(record, dict):
        raise DamagedFileError(path, f"holds a JSON {type(record).__name__}, not an object")
    record = upgrade_record(record)
    for key, kind in required.items():
        if not isinstance(record.get(key), kind):
            got = "missing" if key not in record else f"a {type(record[key]).__name__}"
            raise DamagedFileError(path, f"key {key!r} is {got}")
    return record


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A run result or cell row of an earlier layout in today's: the realised sparsity under
    ``realised_sparsity`` (it was ``sparsity``, beside ``target_sparsity``, which the config
    holds), the code and machine under ``provenance`` (they were top-level keys)."""
    out = dict(record)
    if "result" in out and isinstance(out["result"], dict):
        out["result"] = upgrade_record(out["result"])
    is_result = "test_accuracy_final" in out
    if is_result and "realised_sparsity" not in out and isinstance(out.get("sparsity"), (int, float)):
        out["realised_sparsity"] = out.pop("sparsity")
        out.pop("target_sparsity", None)
    if "provenance" not in out and any(k in out for k in PROVENANCE_KEYS) and (is_result or "cell_id" in out):
        out["provenance"] = {k: out.pop(k, None) for k in PROVENANCE_KEYS}
    if "provenance" in out and isinstance(out.get("result"), dict):  # a cell row keeps it once
        out["result"].pop("provenance", None)
    return out


def set_aside(path: str | Path) -> Path | None:
    """Rename a damaged file to ``<name>.damaged`` (``.damaged-2``, ... if taken) beside it, so
    that it no longer counts; the new path, or None when the folder is read-only."""
    path = Path(path)
    for n in range(1, 1000):
        target = path.with_name(path.name + (".damaged" if n == 1 else f".damaged-{n}"))
        if not target.exists():
            try:
                os.replace(path, target)
            except OSError:
                return None
            return target
    return None


def cell_file(sweep_dir: str | Path, cell_id: str) -> Path:
    """Where a finished cell's row lives."""
    return Path(sweep_dir) / CELLS_DIR / f"{cell_id}.json"


def claim_file(sweep_dir: str | Path, cell_id: str) -> Path:
    """The lock file of a cell's claim (:mod:`fts_core.experiments.claims`)."""
    return Path(sweep_dir) / CLAIMS_DIR / f"{cell_id}.lock"


def failure_file(sweep_dir: str | Path, cell_id: str) -> Path:
    """Where the last failure of a cell is recorded (removed once it succeeds)."""
    return Path(sweep_dir) / FAILURES_DIR / f"{cell_id}.json"


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically (a plain file ``torch.load`` reads, e.g. ``mask.pt``)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Serialise ``state`` with a sha256 header and write it atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    return atomic_write_bytes(path, MAGIC + digest + b"\n" + payload)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises ``CorruptCheckpointError`` when the header, the length or the hash is wrong, or
    the payload does not unpickle to a dict; ``FileNotFoundError`` when it does not exist.
    """
    path = Path(path)
    data = path.read_bytes()
    head = len(MAGIC) + _HEX + 1
    if len(data) < head or not data.startswith(MAGIC) or data[head - 1 : head] != b"\n":
        raise CorruptCheckpointError(f"{path}: not a checkpoint (bad or missing header, {len(data)} bytes)")
    expected = data[len(MAGIC) : head - 1].decode("ascii", errors="replace")
    payload = memoryview(data)[head:]
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise CorruptCheckpointError(
            f"{path}: checksum mismatch (truncated or damaged file, {len(payload)} payload bytes)"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means unusable
        raise CorruptCheckpointError(f"{path}: payload does not load: {err}") from err
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{path}: payload is a {type(state).__name__}, not a dict")
    return state


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / f"checkpoint-{epoch:04d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the checkpoint files in ``run_dir``, newest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = _NAME.fullmatch(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def latest_checkpoint(
    run_dir: str | Path,
    map_location: Any = "cpu",
    required_keys: tuple[str, ...] = (),
    validate: Callable[[int, dict[str, Any]], str | None] | None = None,
) -> tuple[int, dict[str, Any]] | None:
    """The newest checkpoint that loads, holds ``required_keys`` and passes ``validate``
    (a function ``(epoch, state) -> problem or None``); ``None`` if there is none.

    Unusable ones are skipped with a ``RuntimeWarning`` naming the file and the reason (they
    are left in place; retraining that epoch overwrites them).
    """
    for epoch, path in list_checkpoints(run_dir):
        try:
            state = load_checkpoint(path, map_location=map_location)
            missing = [k for k in required_keys if k not in state]
            if missing:
                raise CorruptCheckpointError(f"{path}: missing entries {missing}")
            if state.get("epoch", epoch) != epoch:
                raise CorruptCheckpointError(f"{path}: holds epoch {state.get('epoch')}, name says {epoch}")
            problem = validate(epoch, state) if validate is not None else None
            if problem:
                raise CorruptCheckpointError(f"{path}: {problem}")
        except CorruptCheckpointError as err:
            warnings.warn(f"skipping unusable checkpoint: {err}", RuntimeWarning, stacklevel=2)
            continue
        return epoch, state
    return None


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (``keep=0``: delete none); return the deleted."""
    if keep <= 0:
        return []
    deleted = []
    for _, path in list_checkpoints(run_dir)[keep:]:
        path.unlink(missing_ok=True)
        deleted.append(path)
    return deleted


def remove_stale_temporaries(folder: str | Path, name: str = "") -> None:
    """Remove the ``.<name>*.tmp`` files that a process killed while writing left in ``folder``
    (all of them when ``name`` is empty). Call it only while holding the folder's (or that
    file's) claim: a live writer's temporary file looks the same."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(f".{glob.escape(name)}*.tmp"):
            try:
                p.unlink(missing_ok=True)
            except OSError:  # a read-only folder: nothing to clean
                pass


# ---------------------------------------------------------------------- provenance
_GIT: dict[str, Any] = {}


def git_revision() -> dict[str, Any]:
    """``{"git_revision": sha or None, "git_dirty": bool or None}`` of the fts_core checkout,
    read without touching git's index; cached per process."""
    if not _GIT:
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
        try:
            sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                 timeout=10, env=env)
            if sha.returncode != 0:
                raise OSError(sha.stderr)
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10, env=env)
            _GIT.update(git_revision=sha.stdout.strip() or None, git_dirty=bool(dirty.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            _GIT.update(git_revision=None, git_dirty=None)
    return dict(_GIT)


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a result depends on (those installed)."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}  # with its build tag
    for dist in ("fts-core", "torchvision", "numpy", "ray", "papermill"):
        try:
            versions[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def provenance(device: torch.device | str, git: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"git_revision", "git_dirty", "versions", "device"}``: the code and machine of a result
    (``git``: the revision to name when this process sees no git checkout, e.g. a Ray worker's)."""
    found = git_revision()
    if found["git_revision"] is None and git:
        found = {k: git.get(k) for k in ("git_revision", "git_dirty")}
    return {**found, "versions": library_versions(), "device": describe_device(device)}


def describe_device(device: torch.device | str) -> str:
    """``"cuda:0 (NVIDIA H200)"`` or ``"cpu (x86_64, 2 threads)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
