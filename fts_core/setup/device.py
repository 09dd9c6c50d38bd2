"""Device helpers shared by data loading, training and the runner: resolve a device name, wait
for it, set the CPU thread count."""
from __future__ import annotations

import torch

__all__ = ["resolve_device", "synchronize", "set_threads"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``.

    A CUDA or MPS device that this machine lacks is a ``ValueError`` naming it (instead of a
    failure at the first tensor moved there).
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available here; use 'cpu' or 'auto'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}: MPS is not available here; use 'cpu' or 'auto'")
    return dev


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU); for wall-clock timings."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - no MPS here
        torch.mps.synchronize()


def set_threads(threads: int) -> int:
    """Use ``threads`` CPU threads for torch's intra-op work (float32 sums depend on the count,
    so notebooks and benchmarks fix it); returns the previous count."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}: must be an integer >= 1")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    return before
