"""What every chapter notebook does first and last: check the papermill parameters it was
given, and write its summary file.

A notebook's ``parameters`` cell declares each parameter with a type annotation
(``epochs: int = 6``). papermill injects the caller's values in a cell of assignments right
after it, and by itself only *warns* about a name the notebook does not declare, then runs
with the defaults: ``-p epoch 1`` trains the default six epochs. :func:`check_parameters`,
called at the top of the next cell, stops such a run before any work, and coerces what the
command line cannot express (``-p criteria fts,snip`` -> ``["fts", "snip"]``).
"""
from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, MutableMapping

from fts_core.hints import unknown_names
from fts_core.io import atomic_write_text, json_default
from fts_core.values import coerce

__all__ = ["check_parameters", "write_summary"]

_INJECTED_HEADER = "# Parameters\n"  # the first line of the cell papermill injects


def _injected_names(namespace: MutableMapping[str, Any]) -> list[str]:
    """Names assigned by papermill's injected cell when it ran just before this cell (else none)."""
    history = namespace.get("In") or []
    if len(history) < 2 or not str(history[-2]).startswith(_INJECTED_HEADER):
        return []
    names = []
    for node in ast.parse(history[-2]).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def check_parameters(namespace: MutableMapping[str, Any]) -> list[str]:
    """Stop on papermill parameters the notebook does not declare; coerce the declared ones.
    Returns the names of the parameters that were given (empty for a run at the defaults).

    ``namespace`` is the notebook's ``globals()``. The declared parameters are the annotated
    names of the ``parameters`` cell (``__annotations__``); the given ones are the names that
    papermill's injected cell assigned. Raises ``NameError`` for an unknown name (with the
    closest declared one and the full list) and ``TypeError`` for a value of the wrong type
    (:func:`fts_core.values.coerce`).
    """
    declared = dict(namespace.get("__annotations__", {}))
    given = _injected_names(namespace)
    unknown = [n for n in given if n not in declared]
    if unknown:
        raise NameError(f"unknown notebook parameter(s) {unknown_names(unknown, declared)}; this notebook's parameters: "
                        f"{', '.join(declared)} (papermill --help-notebook lists them with their defaults)")
    for name, hint in declared.items():
        if name in namespace:
            value = namespace[name]  # None is allowed for any parameter ("None: the whole split")
            namespace[name] = None if value is None else coerce(value, hint, f"notebook parameter {name}")
    return given


def write_summary(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write a notebook's ``summary`` as JSON at ``path`` (its folder made), atomically: key
    order kept, numpy numbers as plain numbers, infinities as null (JSON has none)."""
    plain = _finite(json.loads(json.dumps(summary, default=json_default)))
    return atomic_write_text(path, json.dumps(plain, indent=1) + "\n")


def _finite(obj: Any) -> Any:
    """``obj`` with every infinite or NaN float replaced by None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj
