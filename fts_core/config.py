"""``RunConfig``: everything that defines one experiment run (defaults = the paper's protocol).

A config maps 1:1 onto a flat dict, a YAML file and papermill parameters::

    cfg = RunConfig.from_yaml("params/example_digits.yaml")
    cfg = RunConfig.from_dict({"dataset": "digits", "width": 0.125, "epochs": 6})
    cfg.to_dict()            # plain Python types (lists, not tuples)
    cfg.config_hash()        # sha256 over the fields that change the numbers

Values are type-checked and range-checked on construction; an unknown key is an error that
names it. Names of models, datasets, criteria and mask scopes are checked against their
registries by :meth:`RunConfig.check_names` (imports the heavy modules, so it is separate).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

WARMUP_KINDS = ("train", "bn")

# fields that do not change any number a run produces; left out of the config hash
_NOT_IN_HASH = frozenset({"out_dir", "quiet", "run_name", "keep_checkpoints", "root", "device"})


@dataclass(frozen=True)
class RunConfig:
    """One run: warm-up -> score -> prune -> train (mask enforced) -> test.

    Protocol (paper defaults): ``epochs`` counts every epoch of the run including dense
    warm-up epochs; with ``warmup_kind="train"`` the network is pruned at the start of epoch
    ``warmup``; with ``warmup_kind="bn"`` it is pruned before epoch 0 after ``warmup`` passes
    over the training split that only refresh BatchNorm running statistics (no weight updates,
    not counted in ``epochs``). MultiStepLR ``milestones`` count from epoch 0 of the run.
    """

    # what is trained
    dataset: str = "cifar10"
    model: str = "resnet18"
    width: float = 1.0
    # pruning
    criterion: str = "fts"
    sparsity: float = 0.9
    scope: str = "global"
    prunable: str = "default"  # masks.prunable_parameters rule: "default" | "authors"
    # seeds: init + scoring sample + training order (seed); train/val split (split_seed)
    seed: int = 0
    split_seed: int = 42
    # schedule
    epochs: int = 160
    warmup: int = 0
    warmup_kind: str = "train"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 512
    milestones: tuple[int, ...] = (60, 120)
    gamma: float = 0.2
    # scoring
    score_samples: Optional[int] = None  # None = the whole training split
    per_class: Optional[int] = None
    score_batch_size: Optional[int] = None  # loader batch for scoring; None = batch_size
    chunk_size: Optional[int] = None
    bn_mode: str = "eval"  # BatchNorm while scoring: running statistics (the authors); passed to score()
    strategy: str = "auto"
    criterion_options: dict = field(default_factory=dict)  # extra keyword options of the criterion
    # data and model extras
    subset: Optional[int] = None
    val_fraction: float = 0.2
    root: Optional[str] = None
    data_options: dict = field(default_factory=dict)  # extra keyword options of the dataset
    model_options: dict = field(default_factory=dict)  # extra keyword options of the model
    # execution
    device: str = "auto"
    channels_last: Optional[bool] = None  # NHWC training; None = on the CPU when safe (fts_core.layout)
    out_dir: str = "runs"
    run_name: Optional[str] = None  # None = derived from the config hash
    keep_checkpoints: int = 2  # a checkpoint per epoch, the newest 2 kept (0 keeps all); the final one when done
    quiet: bool = False

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        self._check_values()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "RunConfig":
        """Build from a flat mapping; unknown keys raise ``ValueError`` naming them."""
        d = dict(d or {})
        known = cls.field_names()
        unknown = [k for k in d if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(
                f"unknown config key(s): {', '.join(hints)}; known keys: {', '.join(known)}"
            )
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        """Read a YAML mapping of config keys (an empty file gives the defaults)."""
        return cls.from_dict(load_yaml_mapping(path))

    @classmethod
    def coerce(cls, config: "RunConfig | Mapping[str, Any] | str | Path") -> "RunConfig":
        """Accept a RunConfig, a mapping or a YAML path."""
        if isinstance(config, RunConfig):
            return config
        if isinstance(config, (str, Path)):
            return cls.from_yaml(config)
        if isinstance(config, Mapping):
            return cls.from_dict(config)
        raise TypeError(f"config must be a RunConfig, a mapping or a YAML path, not {type(config).__name__}")

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with some fields changed (unknown names raise ``ValueError``)."""
        d = self.to_dict()
        d.update(changes)
        return type(self).from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (tuples become lists), in field order."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = json.loads(json.dumps(v))
            out[f.name] = v
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict[str, Any]:
        """The fields that change the numbers of a run (the hash is taken over these)."""
        return {k: v for k, v in self.to_dict().items() if k not in _NOT_IN_HASH}

    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def default_run_name(self) -> str:
        """``<model>-w<width>-<dataset>-<criterion>-s<sparsity>-seed<seed>-<hash10>``."""
        return (
            f"{self.model}-w{self.width:g}-{self.dataset}-{self.criterion}"
            f"-s{self.sparsity:g}-seed{self.seed}-{self.config_hash()[:10]}"
        )

    @property
    def name(self) -> str:
        return self.run_name or self.default_run_name()

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def prune_epoch(self) -> int:
        """Index of the first sparse epoch (the mask is applied at its start)."""
        return self.warmup if self.warmup_kind == "train" else 0

    # ------------------------------------------------------------------ checks
    def _check_values(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"config {name}={getattr(self, name)!r}: {why}")

        if not self.width > 0:
            raise bad("width", "must be > 0")
        if not 0.0 <= self.sparsity < 1.0:
            raise bad("sparsity", "must be in [0, 1)")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be > 0")
        if self.warmup < 0:
            raise bad("warmup", "must be >= 0")
        if self.warmup_kind not in WARMUP_KINDS:
            raise bad("warmup_kind", f"allowed: {', '.join(WARMUP_KINDS)}")
        if self.warmup_kind == "train" and self.warmup >= self.epochs:
            raise ValueError(
                f"config warmup={self.warmup} must be < epochs={self.epochs}: the dense warm-up "
                "epochs are part of the run, so no epoch would be left to train the pruned network"
            )
        if not self.lr > 0:
            raise bad("lr", "must be > 0")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "must be in [0, 1)")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must be >= 0")
        if not self.gamma > 0:
            raise bad("gamma", "must be > 0")
        if any(m <= 0 for m in self.milestones) or list(self.milestones) != sorted(set(self.milestones)):
            raise bad("milestones", "must be strictly increasing positive epochs")
        for name in ("score_samples", "per_class", "score_batch_size", "chunk_size", "subset"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise bad(name, "must be > 0 or null")
        if self.score_samples is not None and self.per_class is not None:
            raise ValueError(f"config score_samples={self.score_samples!r} and per_class={self.per_class!r}: "
                             "give at most one of them (a sample of N in all, or N per class)")
        if not 0 < self.val_fraction < 1:
            raise bad("val_fraction", "must be in (0, 1)")
        if self.keep_checkpoints < 0:
            raise bad("keep_checkpoints", "must be >= 0 (0 = keep all)")
        if self.run_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", self.run_name):
            raise bad("run_name", "use letters, digits and . _ + = - only (it names a directory)")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise bad("device", "allowed: auto, cpu, cuda, cuda:N, mps")

    def check_names(self) -> None:
        """Check the names and options that live in registries, before any data is loaded:
        model, dataset, criterion, scope, ``bn_mode``, ``strategy`` and the criterion options
        (names, types and allowed values, see :func:`check_criterion_options`).

        What needs the data or the model (``score_samples`` / ``per_class`` against the
        training split, BatchNorm against ``bn_mode``) is checked by the runner after loading.
        """
        from fts_core.criteria import BN_MODES, CRITERIA
        from fts_core.data import DATASETS
        from fts_core.models import MODELS
        from fts_core.persample import STRATEGIES

        for key, registry in (("model", MODELS), ("dataset", DATASETS), ("criterion", CRITERIA)):
            value = getattr(self, key)
            if value not in registry:
                raise ValueError(f"unknown {key} {value!r}; known: {', '.join(sorted(registry))}")
        for key, allowed in (("bn_mode", BN_MODES), ("strategy", STRATEGIES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"config {key}={getattr(self, key)!r}: allowed: {', '.join(map(str, allowed))}")
        check_criterion_options(self.criterion, self.criterion_options)
        _check_scope(self.scope)


# ---------------------------------------------------------------------- criterion options
def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_ints(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v)


def _option_rules() -> dict[str, tuple[Any, str]]:
    """Option name -> (test, what is allowed): the values the shipped criteria accept in a run
    (by name, so a user's criterion with an option of the same name gets the same check)."""
    from fts_core.synflow import SCHEDULES

    return {
        "sign": (lambda v: v in ("+", "-"), "'+' or '-'"),
        "absolute": (lambda v: isinstance(v, bool), "true or false"),
        "convention": (lambda v: v in ("authors", "reference"), "'authors' or 'reference'"),
        "temperature": (lambda v: _real(v) and v > 0, "a finite number > 0"),
        "damping": (lambda v: _real(v) and v > 0, "a finite number > 0 (0 gives NaN scores where the Fisher is 0, "
                                                   "which make_masks refuses)"),
        "probes": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
        "rounds": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
        "double": (lambda v: isinstance(v, bool), "true or false"),
        "sparsity": (lambda v: v is None or (_real(v) and 0 <= v < 1),
                     "null (= the run's sparsity) or a number in [0, 1)"),
        "input_shape": (lambda v: v is None or _positive_ints(v),
                        "null or a list of positive integers, e.g. [3, 32, 32]"),
        "schedule": (lambda v: v in SCHEDULES, " or ".join(map(repr, SCHEDULES))),
    }


def _rule_from_default(default: Any) -> tuple[Any, str] | None:
    """A type check derived from an option's registered default (None: no information)."""
    if isinstance(default, bool):
        return (lambda v: isinstance(v, bool)), "true or false"
    if isinstance(default, int):
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "an integer"
    if isinstance(default, float):
        return _real, "a finite number"
    if isinstance(default, str):
        return (lambda v: isinstance(v, str)), "a string"
    return None


def check_criterion_options(criterion: str, options: Mapping[str, Any]) -> None:
    """Check ``criterion_options`` of a run against the criterion's registered options.

    Names must be among the criterion's ``options``; values must pass the known rule for
    that name (e.g. ``sign`` is ``"+"`` or ``"-"``, ``probes`` an integer >= 1), or else have
    the type of the registered default. Raises ``ValueError`` naming the option, the bad
    value and what is allowed.
    """
    from fts_core.criteria import CRITERIA

    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; known: {', '.join(sorted(CRITERIA))}")
    defaults = getattr(CRITERIA[criterion], "options", None)
    if defaults is None:  # a criterion that does not declare its options
        return
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"config criterion_options: unknown option(s) {unknown} for criterion "
                         f"{criterion!r}; allowed: {sorted(defaults) or 'none'}")
    rules = _option_rules()
    for key, value in options.items():
        rule = rules.get(key) or _rule_from_default(defaults[key])
        if rule is not None and not rule[0](value):
            raise ValueError(f"config criterion_options={dict(options)!r}: option {key!r} of criterion "
                             f"{criterion!r} must be {rule[1]}, got {value!r}")


def _check_scope(scope: str) -> None:
    """Delegate the scope check to ``make_masks`` on a 4-element dummy score."""
    import torch

    from fts_core.masks import make_masks

    try:
        make_masks({"w": torch.arange(4.0)}, sparsity=0.5, scope=scope)
    except (ValueError, KeyError) as err:
        raise ValueError(f"config scope={scope!r}: {err}") from None


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (or nothing)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    with open(path) as fh:
        data = yaml.safe_load(fh)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of keys, not {type(data).__name__}")
    return data


# ---------------------------------------------------------------------- type coercion
def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a simple annotation; fix harmless differences (int -> float,
    YAML 1.1's ``"5e-4"`` strings -> float, lists -> tuples)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # Optional[X]
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner)

    def fail() -> TypeError:
        return TypeError(f"config {name}={value!r}: expected {_describe(hint)}, got {type(value).__name__}")

    if hint is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if hint is int:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail()
    if hint is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            v = float(value)
        elif isinstance(value, str):
            try:
                v = float(value)
            except ValueError:
                raise fail() from None
        else:
            raise fail()
        if not math.isfinite(v):
            raise ValueError(f"config {name}={value!r}: must be finite")
        return v
    if hint is str:
        if isinstance(value, str):
            return value
        raise fail()
    if origin is tuple:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise fail()
        return tuple(_coerce(name, v, args[0]) for v in value)
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise fail()
        return dict(value)
    raise TypeError(f"internal: unsupported annotation {hint!r} for {name}")  # pragma: no cover


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    return getattr(hint, "__name__", str(hint))
