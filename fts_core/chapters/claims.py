"""Scientific claims of the chapters, checked with a margin and with their measured hold rate.

A notebook states its findings as :class:`Claim` records (a measured value, a bound and the
direction of the inequality), writes them into its summary file, and its check cell calls
:func:`check`, which prints each claim's margin in this execution next to how often the claim
held over the runs measured by ``scripts/measure_claims.py`` (several seeds, two CPU kernel
settings), and fails on a claim that does not hold. A claim is therefore never the record of
one run: its bound is what held in every measured run, and the margin says how far from the
bound this run landed.
"""
from __future__ import annotations

import json
import math
import operator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class Claim:
    """``value <direction> bound``, e.g. "criteria whose collapse moved" ``9 >= 8``.

    key: a stable identifier (used in the hold-rate file); text: the claim in words; value:
    what this execution measured; bound: the threshold; direction: ``">="``, ``">"``, ``"<="``
    or ``"<"``; unit: how the value is read (``"criteria"``, ``"accuracy"``, ...).
    """

    key: str
    text: str
    value: float
    bound: float
    direction: str = ">="
    unit: str = ""

    def __post_init__(self) -> None:
        if self.direction not in _OPS:
            raise ValueError(f"claim {self.key!r}: direction {self.direction!r} is not one of {list(_OPS)}")

    @property
    def holds(self) -> bool:
        return bool(_OPS[self.direction](self.value, self.bound)) and not math.isnan(self.value)

    @property
    def margin(self) -> float:
        """How far the value lies on the right side of the bound (negative: the claim fails)."""
        return self.value - self.bound if self.direction in (">=", ">") else self.bound - self.value

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "holds": self.holds, "margin": self.margin}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Claim":
        return cls(**{k: d[k] for k in ("key", "text", "value", "bound", "direction", "unit") if k in d})


def load_rates(path: str | Path | None) -> dict[str, Any]:
    """The hold-rate file written by ``scripts/measure_claims.py`` (``{}`` when there is none)."""
    if path is None or not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text())


def rate_text(rates: Mapping[str, Any], key: str) -> str:
    """``"10 of 10 runs (seeds 0-4, 2 kernel settings)"`` for one claim, or ``"not measured"``."""
    entry = rates.get("claims", {}).get(key)
    if not entry:
        return "not measured"
    return f"{entry['held']} of {entry['tried']} runs ({rates.get('runs_described', 'measured runs')})"


def _fmt(x: float) -> str:
    if isinstance(x, float) and (x != x or math.isinf(x)):
        return str(x)
    return f"{x:.4g}" if isinstance(x, float) and not float(x).is_integer() else f"{x:g}"


def report(claims: Iterable[Claim], rates: Mapping[str, Any] | None = None, held: str | None = None) -> str:
    """One line per claim: the claim, this run's value against its bound and margin, the hold rate
    (or ``held``, said of every claim: e.g. that they are computed from committed files)."""
    rates = rates or {}
    lines = []
    for c in claims:
        mark = "holds" if c.holds else "FAILS"
        lines.append(f"[{mark}] {c.text}\n        here: {_fmt(c.value)} {c.direction} {_fmt(c.bound)}"
                     f"{' ' + c.unit if c.unit else ''} (margin {_fmt(c.margin)}); "
                     f"held in {held or rate_text(rates, c.key)}")
    return "\n".join(lines)


def check(claims: Iterable[Claim], rates_path: str | Path | None = None, *, strict: bool = True,
          held: str | None = None) -> None:
    """Print :func:`report` and raise ``AssertionError`` naming every claim that fails.

    ``held``: what to print instead of a measured hold rate, for claims that cannot vary between
    runs (computed from committed results, no training): e.g. ``"every execution: no training"``.

    ``strict=False`` (a notebook run at parameters other than those the rates were measured
    at) reports the claims without failing: their bounds were set for the measured setting."""
    claims = list(claims)
    keys = [c.key for c in claims]
    if len(set(keys)) != len(keys):
        raise ValueError(f"claim keys must be unique, got {keys}")
    print(report(claims, load_rates(rates_path), held))
    failed = [c for c in claims if not c.holds]
    if failed and not strict:
        print(f"{len(failed)} claim(s) do not hold at these parameters; they were measured at the defaults, "
              "so this is reported, not asserted")
    elif failed:
        raise AssertionError("claims that do not hold in this run: " + "; ".join(
            f"{c.key}: {_fmt(c.value)} {c.direction} {_fmt(c.bound)} is false (margin {_fmt(c.margin)})"
            for c in failed))
