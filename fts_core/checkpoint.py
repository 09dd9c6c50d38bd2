"""Atomic files and self-checking checkpoints for runs that survive crashes.

Every file is written to a temporary name in the same directory, flushed, fsync'ed and
renamed over the target (``os.replace`` is atomic on POSIX), so a reader sees the old file or
the new one, never half of one.

A checkpoint file is ``MAGIC`` + the sha256 of the payload (64 hex digits) + newline + the
``torch.save`` payload. :func:`load_checkpoint` recomputes the hash, so a truncated or
otherwise damaged file is *detected* (``CorruptCheckpointError``) instead of loaded; it
loads with ``weights_only=True`` (tensors, numbers, strings, lists, dicts only).

Checkpoints of a run are ``checkpoint-EEEE.pt`` (EEEE = the epoch just completed, from 0);
:func:`latest_checkpoint` returns the newest one that loads, warning about the ones skipped.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

MAGIC = b"FTS-CHECKPOINT-v1\n"
_HEX = 64
_NAME = re.compile(r"checkpoint-(\d+)\.pt")


class CorruptCheckpointError(ValueError):
    """The file is not a complete checkpoint written by :func:`save_checkpoint`."""


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


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Remove ``.*.tmp`` files left by a process killed while writing."""
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        for p in run_dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)
