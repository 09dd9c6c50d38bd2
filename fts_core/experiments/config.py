"""``RunConfig``: everything that defines one experiment run (defaults = the paper's protocol).

A config maps 1:1 onto a flat dict, a YAML file and papermill parameters::

    cfg = RunConfig.from_yaml("params/example_digits.yaml")
    cfg = RunConfig.from_dict({"dataset": "digits", "width": 0.125, "epochs": 6})
    cfg.to_dict()            # plain Python types (lists, not tuples)
    cfg.config_hash()        # sha256 over the fields that change the numbers

Values are type-checked and range-checked on construction; an unknown key is an error that
names it. Names of models, datasets, criteria and mask scopes, and the criterion's options,
are checked against their registries by :meth:`RunConfig.check_names`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from fts_core.hints import unknown_names
from fts_core.io import load_yaml_mapping
from fts_core.masks.select import ROUNDINGS, SCOPES, check_sparsity
from fts_core.scoring import CRITERIA, Options, check_bn_mode
from fts_core.scoring.persample import check_strategy
from fts_core.setup.datasets import DATASETS
from fts_core.setup.models import MODELS
from fts_core.values import coerce

WARMUP_KINDS = ("train", "bn")

# fields that do not change any number a run produces; left out of the config hash
PATH_FIELDS = ("out_dir", "root")  # ~ expanded; in a config file, relative to the file's folder
_NOT_IN_HASH = frozenset({"out_dir", "quiet", "run_name", "keep_checkpoints", "root", "device"})
# fields added after results were committed: they enter the hash only when they differ from
# this value (the old behaviour), so every earlier run keeps its name and every committed
# sweep cell its id
_HASH_UNLESS = {"augment": True, "rounding": "nearest"}


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
    prunable: str = "default"  # masks.prunable_parameters rule: "default" | "authors" | "all_weights"
    rounding: str = "nearest"  # masks.make_masks rule: "nearest" | "authors" (their top-k, NaN first)
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
    augment: bool = True  # random crop + flip of training images (scoring and BN refresh included)
    # scoring
    score_samples: Optional[int] = None  # None = the whole training split
    per_class: Optional[int] = None
    score_batch_size: Optional[int] = None  # loader batch for scoring; None = batch_size
    chunk_size: Optional[int] = None
    bn_mode: Optional[str] = "eval"  # BatchNorm while scoring: running statistics (the authors); passed to score()
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
    channels_last: Optional[bool] = None  # NHWC training; None = on the CPU when safe (fts_core.setup.layout)
    out_dir: str = "runs"
    run_name: Optional[str] = None  # None = derived from the config hash
    keep_checkpoints: int = 2  # a checkpoint per epoch, the newest 2 kept (0 keeps all); the final one when done
    quiet: bool = False

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = coerce(getattr(self, f.name), hints[f.name], f"config {f.name}")
            if f.name in PATH_FIELDS and isinstance(value, str):
                value = os.path.expanduser(value)  # "~/runs" is the home folder's runs, as everywhere
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
            raise ValueError(f"unknown config key(s): {unknown_names(unknown, known)}; known keys: {', '.join(known)}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        """Read a YAML mapping of config keys (see :func:`load_yaml_mapping` for what is refused);
        its relative ``out_dir`` and ``root`` are relative to the file's folder, as in a sweep file."""
        d = load_yaml_mapping(path)
        folder = Path(path).expanduser().resolve().parent
        for key in PATH_FIELDS:
            if isinstance(d.get(key), str) and not Path(d[key]).expanduser().is_absolute():
                d[key] = str(folder / d[key])
        return cls.from_dict(d)

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
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict[str, Any]:
        """The fields that change the numbers of a run (the hash is taken over these)."""
        return {k: v for k, v in self.to_dict().items()
                if k not in _NOT_IN_HASH and not (k in _HASH_UNLESS and v == _HASH_UNLESS[k])}

    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def default_run_name(self) -> str:
        """``<model>-w<width>-<dataset>-<criterion>-s<sparsity>-seed<seed>[-warmup<n><kind>]-<hash10>``."""
        warm = f"-warmup{self.warmup}{self.warmup_kind}" if self.warmup else ""
        return (
            f"{self.model}-w{self.width:g}-{self.dataset}-{self.criterion}"
            f"-s{self.sparsity:g}-seed{self.seed}{warm}-{self.config_hash()[:10]}"
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
        check_sparsity(self.sparsity, "config sparsity", below_one=True)
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
        model, dataset, criterion, scope, rounding, ``bn_mode``, ``strategy`` and the criterion
        options (through the criterion's options record, as ``score()`` checks them).

        What needs the data or the model (``score_samples`` / ``per_class`` against the
        training split, BatchNorm against ``bn_mode``) is checked by the runner after loading.
        """
        for key, registry in (("model", MODELS), ("dataset", DATASETS), ("criterion", CRITERIA)):
            value = getattr(self, key)
            if value not in registry:
                raise ValueError(f"unknown {key} {unknown_names([value], registry)}; known: {', '.join(sorted(registry))}")
        check_strategy(self.strategy, "config strategy")
        check_bn_mode(self.bn_mode, "config bn_mode")
        for key, allowed in (("rounding", ROUNDINGS), ("scope", SCOPES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"config {key}={getattr(self, key)!r}: allowed: {', '.join(map(str, allowed))}")
        try:
            self.criterion_options_record()
        except ValueError as err:
            raise ValueError(f"config criterion_options={self.criterion_options!r}: {err}") from None

    def criterion_options_record(self) -> Options:
        """The criterion's options record; an iterative criterion (SynFlow) aims at the run's
        ``sparsity`` unless its options say otherwise."""
        crit = CRITERIA[self.criterion]
        options = dict(self.criterion_options)
        if crit.iterative and options.get("sparsity") is None:
            options["sparsity"] = self.sparsity
        return crit.make_options(options)
