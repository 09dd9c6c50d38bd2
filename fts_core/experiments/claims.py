"""One worker per cell and per run folder: an exclusive claim taken before the work starts.

A claim is an OS lock (``fcntl.flock`` through the ``filelock`` library) on a lock file: it is
taken without waiting, held while the work runs and released on exit; after work that ended
without an exception the lock file is removed, so the holder must re-check, under its claim,
whether the work is already done. The kernel drops the lock when the holder dies, so a lock file
left by a crashed process is stale by construction and the next claimant takes it. The holder's
host and pid are written into the lock file for messages.
Locks on NFS need a server with lock support (NFSv4).
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import filelock

__all__ = ["Claimed", "claim"]


class Claimed(RuntimeError):
    """Another live process holds the claim (``holder``: its ``host:pid`` when known)."""

    def __init__(self, what: str, lock: Path, holder: str) -> None:
        self.what, self.lock, self.holder = what, lock, holder
        super().__init__(f"{what} is being worked on by another process ({holder or 'unknown'}, lock {lock})")


@contextmanager
def claim(lock: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the exclusive claim ``lock`` (a file path; its folder is created) for the ``with``
    block; :class:`Claimed` at once when another live process holds it."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    held = filelock.UnixFileLock(str(lock), timeout=0)
    try:
        held.acquire()
    except filelock.Timeout:
        raise Claimed(what, lock, _holder(lock)) from None
    try:
        try:  # flock is held by the lock's own descriptor; writing through another one keeps it
            lock.write_text(f"{socket.gethostname()}:{os.getpid()}\n")
        except OSError:
            pass
        yield
        lock.unlink(missing_ok=True)  # done: no file left behind (a late claimant re-checks the result)
    finally:
        held.release()


def _holder(lock: Path) -> str:
    try:
        return lock.read_text().strip()
    except OSError:
        return ""
