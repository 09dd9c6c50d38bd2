"""The criterion registry: one record per criterion, with its flags and its typed options.

:func:`criterion` registers a function in :data:`CRITERIA` under a name, with its flags
(``per_sample``, ``needs_data``, ``iterative``) and its options record: a frozen :class:`Options`
dataclass whose fields, declared with :func:`option`, carry their default, help text and allowed
values. Building one validates every value (:class:`OptionError`, a ``ValueError`` naming the option,
the value and what is allowed), and :meth:`Options.from_dict` also refuses unknown names; ``score()``
and ``RunConfig`` both validate through it. A worked example: ``book/guide.md``, "Adding a criterion".
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fts_core.hints import unknown_names
from fts_core.values import coerce

__all__ = ["Options", "OptionError", "NoOptions", "option", "Criterion", "CRITERIA", "criterion", "labels"]


def option(default: Any, help: str, *, choices: tuple | None = None, low: float | None = None,
           high: float | None = None, low_open: bool = False, high_open: bool = False) -> Any:
    """A field of an options record: its default, help text and allowed values (``choices``, or
    a range ``low``..``high``, each end closed unless ``*_open``)."""
    return field(default=default, metadata={"help": help, "choices": choices, "low": low, "high": high,
                                            "low_open": low_open, "high_open": high_open})


def _allowed(f: dataclasses.Field, kind: Any) -> str:
    m = f.metadata
    if m.get("choices"):
        return " or ".join(map(repr, m["choices"]))
    what = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(kind, str(kind))
    if m.get("low") is not None:
        what += f" {'>' if m['low_open'] else '>='} {m['low']:g}"
    if m.get("high") is not None:
        what += f" {'and ' if m.get('low') is not None else ''}{'<' if m['high_open'] else '<='} {m['high']:g}"
    return what


def _check_value(f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """``value`` read as the field's type (:func:`fts_core.values.coerce`) and checked against the
    field's allowed values; ``ValueError`` saying what is allowed."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    kind = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if value is None and optional:
        return None
    try:
        v = coerce(value, kind, f.name)
    except (TypeError, ValueError):
        v = _BAD
    null = "null or " if optional else ""
    if typing.get_origin(kind) is tuple:  # a shape: positive integers
        if v is _BAD or not v or any(x <= 0 for x in v):
            raise ValueError(f"{null}a list of positive integers, e.g. [3, 32, 32]")
        return v
    m = f.metadata
    inside = v is not _BAD and (not m.get("choices") or v in m["choices"])
    if inside and m.get("low") is not None:
        inside = v > m["low"] if m["low_open"] else v >= m["low"]
    if inside and m.get("high") is not None:
        inside = v < m["high"] if m["high_open"] else v <= m["high"]
    if not inside:
        raise ValueError(f"{null}{_allowed(f, kind)}")
    return v


_BAD = object()  # a value that is not of the field's type


class OptionError(ValueError):
    """A bad criterion option: ``option`` (None for unknown names), what is wrong, and ``tail``
    (what is allowed); :meth:`Criterion.make_options` adds the criterion's name."""

    def __init__(self, option: str | None, problem: str, tail: str = "") -> None:
        self.option, self.problem, self.tail = option, problem, tail
        super().__init__(self.message())

    def message(self, criterion: str | None = None) -> str:
        of = f" of criterion {criterion!r}" if criterion else ""
        if self.option is None:
            return f"{self.problem}{' for criterion ' + repr(criterion) if criterion else ''}; {self.tail}"
        return f"option {self.option!r}{of} must be {self.problem}"


@dataclass(frozen=True)
class Options:
    """Base of a criterion's options record (see the module docstring)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, _check_value(f, hints[f.name], value))
            except ValueError as err:
                raise OptionError(f.name, f"{err}, got {value!r} ({f.metadata.get('help', '')})") from None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "Options":
        """The record from ``{option: value}``; unknown names raise :class:`OptionError`."""
        values = dict(values or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in known]
        if unknown:
            raise OptionError(None, f"unknown option(s) {unknown_names(unknown, known)}", f"allowed: {', '.join(known) or 'none'}")
        return cls(**values)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """``{option: "help (default ...; allowed ...)"}`` for command lines and docs."""
        hints = typing.get_type_hints(cls)
        return {f.name: f"{f.metadata.get('help', '')} (default {f.default!r}; {_allowed(f, hints[f.name])})"
                for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class NoOptions(Options):
    """A criterion without options."""


@dataclass(frozen=True)
class Criterion:
    """A registered criterion: ``fn(ctx) -> {name: Tensor}`` (higher = keep) and what it needs.

    label: its short name in tables and figures (the paper's column label);
    needs_data: it reads scoring data; per_sample: it needs per-sample statistics (F̂), so
    BatchNorm must use running statistics and ĝ comes from the same pass; iterative: a
    procedure towards a target sparsity, which it takes as its ``sparsity`` option (SynFlow).
    """

    name: str
    fn: Callable[..., dict]
    label: str
    options: type[Options] = NoOptions
    needs_data: bool = True
    per_sample: bool = False
    iterative: bool = False

    def __call__(self, ctx: Any) -> dict:
        return self.fn(ctx)

    def make_options(self, values: Mapping[str, Any] | None = None) -> Options:
        """The options record from ``{option: value}`` (``ValueError`` naming this criterion,
        the option, the value and what is allowed)."""
        try:
            return self.options.from_dict(values)
        except OptionError as err:
            raise ValueError(err.message(self.name)) from None


#: name -> :class:`Criterion`
CRITERIA: dict[str, Criterion] = {}


def criterion(name: str, *, label: str | None = None, options: type[Options] = NoOptions, needs_data: bool = True,
              per_sample: bool = False, iterative: bool = False) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Register ``fn(ctx) -> {name: Tensor}`` as criterion ``name`` (see :class:`Criterion`;
    ``label`` defaults to ``name``)."""
    if not (isinstance(options, type) and issubclass(options, Options)):
        raise TypeError(f"criterion {name!r}: options must be an Options dataclass, got {options!r}")
    if iterative and "sparsity" not in {f.name for f in dataclasses.fields(options)}:
        raise TypeError(f"criterion {name!r} is iterative, so its options need a 'sparsity' field")

    def deco(fn: Callable[..., dict]) -> Callable[..., dict]:
        if name in CRITERIA:
            raise ValueError(f"criterion {name!r} is already registered")
        CRITERIA[name] = Criterion(name, fn, label or name, options, needs_data, per_sample, iterative)
        return fn
    return deco


def labels(names: list[str] | None = None) -> dict[str, str]:
    """``{criterion: label}`` in registration order (all criteria, or ``names`` in that order;
    an unregistered name is its own label)."""
    if names is None:
        return {n: c.label for n, c in CRITERIA.items()}
    known = [n for n in CRITERIA if n in names]
    return {n: CRITERIA[n].label if n in CRITERIA else n for n in known + [n for n in names if n not in CRITERIA]}
