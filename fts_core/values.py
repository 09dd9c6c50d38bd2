"""One way to read a value a user wrote (a YAML file, a command line, papermill's ``-p``) as the type
it is declared with: run configs, criterion options and notebook parameters all go through
:func:`coerce`, so ``5e-4``, ``80,120`` or ``3.0`` mean the same everywhere."""
from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["coerce", "describe"]

_NUMBERS = (int, float)


def coerce(value: Any, hint: Any, what: str) -> Any:
    """``value`` as the annotation ``hint``: ``bool``, ``int``, ``float``, ``str``, ``list[X]``,
    ``tuple[X, ...]``, ``dict``, ``X | None`` (``Any`` or no annotation: unchanged). Harmless
    differences are fixed: an integral float for an int, an int for a float, a number written as
    text (``"5e-4"``, YAML 1.1) for a number, a number for a str, one value or a comma-separated
    text for a list or tuple (each element coerced). Anything else raises ``TypeError`` starting
    with ``what`` (``"config lr"``); a float that is not finite, ``ValueError``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"internal: {what}: unsupported annotation {hint!r}")  # pragma: no cover
        return coerce(value, inner[0], what)
    if hint is Any or hint is None or hint is typing.Any:
        return value
    if origin in (list, tuple) or hint in (list, tuple):
        return _sequence(value, hint, what)
    if hint is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _wrong(value, hint, what)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(value, hint, what)
    if hint in (int, float):
        return _number(value, hint, what)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, _NUMBERS) and not isinstance(value, bool):
            return str(value)
        raise _wrong(value, hint, what)
    raise TypeError(f"internal: {what}: unsupported annotation {hint!r}")  # pragma: no cover


def describe(hint: Any) -> str:
    """``float``, ``a list of float``, ``float or null``: an annotation in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {describe(args[0])}" if args else "a list"
    return getattr(hint, "__name__", str(hint))


def _wrong(value: Any, hint: Any, what: str) -> TypeError:
    return TypeError(f"{what}={value!r}: expected {describe(hint)}, got {type(value).__name__}")


def _number(value: Any, kind: type, what: str) -> int | float:
    v = value
    if isinstance(v, str):
        try:  # an integer text stays exact (a large seed), anything else through float
            v = int(v.strip()) if kind is int and v.strip().lstrip("+-").isdigit() else float(v.strip())
        except ValueError:
            raise _wrong(value, kind, what) from None
    if isinstance(v, bool) or not isinstance(v, _NUMBERS):
        raise _wrong(value, kind, what)
    if not math.isfinite(v):
        raise ValueError(f"{what}={value!r}: must be finite")
    if kind is int:
        if isinstance(v, float) and not v.is_integer():
            raise _wrong(value, kind, what)
        return int(v)
    return float(v)


def _sequence(value: Any, hint: Any, what: str) -> list | tuple:
    container = typing.get_origin(hint) or hint
    element = (typing.get_args(hint) or (Any,))[0]
    if isinstance(value, str):  # -p criteria fts,snip
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, _NUMBERS) and not isinstance(value, bool):  # -p seeds 3
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _wrong(value, hint, what)
    items = []
    for v in value:
        try:
            items.append(coerce(v, element, what))
        except (TypeError, ValueError):
            raise TypeError(f"{what}: element {v!r} is not {_article(describe(element))}") from None
    return container(items)


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word
