"""One way to say that a name is unknown: the name, the closest known one, and all of them."""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["unknown_names"]


def unknown_names(names: Iterable[object], known: Iterable[str]) -> str:
    """``'gird' (did you mean 'grid'?), 'x'`` for each unknown name, closest known one first."""
    known = list(known)
    out = []
    for name in names:
        close = difflib.get_close_matches(str(name), known, n=1)
        out.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(out)
