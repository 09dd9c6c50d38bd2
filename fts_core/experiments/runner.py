"""One experiment run, end to end, that survives crashes: ``run(config) -> result``.

The paper's protocol (optional dense or BatchNorm warm-up, scoring, one-shot masks, training
with the mask enforced, testing of the final and best-validation models) for one
:class:`~fts_core.experiments.config.RunConfig`, in ``out_dir/<run name>/``: the config, the
mask, a self-checking checkpoint per epoch and ``result.json`` last, each written atomically.
The same config again returns the stored result, or resumes after the newest checkpoint that
loads, bitwise the same as an uninterrupted run on the same device. Bad input raises before
anything is written; one process trains a run folder at a time. The protocol, the files and
the result's keys are described in the book (``book/reproducibility.md``).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from fts_core.experiments.claims import claim
from fts_core.experiments.config import RunConfig
from fts_core.experiments.training import (
    evaluate,
    make_optimizer,
    make_scheduler,
    refresh_batchnorm,
    train_epoch,
)
from fts_core.io import (
    RUN_CLAIM,
    RUN_CONFIG,
    RUN_MASK,
    RUN_RESULT,
    RUN_RESULT_KEYS,
    DamagedFileError,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_yaml_mapping,
    provenance,
    prune_checkpoints,
    read_record,
    remove_stale_temporaries,
    save_checkpoint,
    set_aside,
)
from fts_core.masks import apply_masks, collapsed_layers, layer_density, make_masks, prunable_parameters
from fts_core.scoring import check_scoring, score
from fts_core.setup.data import load_data
from fts_core.setup.device import resolve_device, synchronize
from fts_core.setup.layout import resolve_channels_last
from fts_core.setup.models import build_model
from fts_core.setup.seeding import seed_torch

__all__ = ["run"]

CHECKPOINT_FORMAT = 1
_REQUIRED = ("format", "epoch", "config_hash", "model", "optimizer", "scheduler", "history", "best", "rng")


# ---------------------------------------------------------------------- public
def run(config: RunConfig | Mapping[str, Any] | str | Path, **overrides: Any) -> dict[str, Any]:
    """Run (or resume, or just read back) one experiment; returns the result dict.

    ``config``: a :class:`RunConfig`, a flat mapping or a YAML path; ``overrides``: fields to
    change (e.g. ``quiet=True``). The same dict is stored as ``<run dir>/result.json``.
    """
    cfg = RunConfig.coerce(config)
    if overrides:
        cfg = cfg.replace(**overrides)
    cfg.check_names()
    run_dir = cfg.run_dir
    _check_existing_config(run_dir, cfg)
    stored = _stored_result(run_dir)  # a finished run is returned even from a read-only folder
    if stored is not None:
        _say(cfg, f"{run_dir} has finished already: returning its stored result (delete the folder, or change "
                  "out_dir, to run again)")
        return stored
    _check_out_dir(Path(cfg.out_dir))

    # everything that can fail on bad input happens before the first write
    device = resolve_device(cfg.device)
    data = load_data(cfg.dataset, root=cfg.root, subset=cfg.subset, seed=cfg.split_seed, device=device,
                     val_fraction=cfg.val_fraction, **cfg.data_options)
    model = _build_model(cfg, data, device)
    prunable = prunable_parameters(model, cfg.prunable)
    _check_scoring(cfg, data, model, prunable)
    channels_last = resolve_channels_last(cfg.channels_last, model, device)

    created = not run_dir.exists()
    _make_run_dir(run_dir, cfg)
    with claim(run_dir / RUN_CLAIM, f"run folder {run_dir}"):  # Claimed: another process trains it
        try:
            stored = _stored_result(run_dir)  # finished by another process while this one loaded
            if stored is not None:
                return stored
            remove_stale_temporaries(run_dir)
            if not (run_dir / RUN_CONFIG).exists():
                atomic_write_text(run_dir / RUN_CONFIG, cfg.to_yaml())
            return _Run(cfg, run_dir, data, model, prunable, device, channels_last).execute()
        except BaseException:
            if created and not list_checkpoints(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


#: RunConfig's names for score()'s arguments, so that refusals name the config field
_CONFIG_NAMES = {name: f"config {field}" for name, field in (
    ("num_samples", "score_samples"), ("per_class", "per_class"), ("bn_mode", "bn_mode"), ("strategy", "strategy"),
    ("chunk_size", "chunk_size"))}


def _check_scoring(cfg: RunConfig, data: Any, model: nn.Module, prunable: Mapping[str, nn.Parameter]) -> None:
    """``score()``'s own preconditions (:func:`~fts_core.scoring.check_scoring`), checked on the
    training split and the fresh model before anything is written: at the pruning point the
    model is in train mode too (fresh, or just after a training epoch)."""
    probe = next(iter(data.loader("train", 1, augment=False, shuffle=False)))[0]
    check_scoring(cfg.criterion, model, labels=data.train.y, probe=probe, num_samples=cfg.score_samples,
                  per_class=cfg.per_class, chunk_size=cfg.chunk_size, bn_mode=cfg.bn_mode, strategy=cfg.strategy,
                  prunable=prunable, options=cfg.criterion_options_record(), spelled=_CONFIG_NAMES)


# ---------------------------------------------------------------------- run directory
def _check_out_dir(out_dir: Path) -> None:
    """``out_dir`` must be a folder this process can write into (created if missing)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"config out_dir={str(out_dir)!r} is a file, not a folder; choose a folder for the run")
    existing = next((p for p in (out_dir, *out_dir.resolve().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"config out_dir={str(out_dir)!r}: {str(existing)!r} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"config out_dir={str(out_dir)!r}: cannot write into {str(existing)!r} (permission denied); "
                         "choose a folder you can write to")


def _check_existing_config(run_dir: Path, cfg: RunConfig) -> None:
    """An existing run dir must hold the same config (identity fields); else refuse."""
    path = run_dir / RUN_CONFIG
    if not path.exists():
        return
    try:
        old = RunConfig.from_dict(load_yaml_mapping(path))
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable config ({err}); remove the directory or choose another "
                         "run_name") from err
    if old.config_hash() != cfg.config_hash():
        a, b = old.identity(), cfg.identity()
        diff = sorted(k for k in a if a[k] != b.get(k))
        raise ValueError(f"run directory {run_dir} holds a different config (differs in: {', '.join(diff)}); "
                         "choose another run_name or out_dir")


def _make_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a read-only file system, a quota, ...
        raise ValueError(f"config out_dir={cfg.out_dir!r}: cannot create the run folder {str(run_dir)!r} "
                         f"({err.strerror or err})") from None


def _stored_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's valid ``result.json``, else None; a damaged one is set aside with a warning
    (the run is then finished again from its last checkpoint)."""
    path = run_dir / RUN_RESULT
    if not path.exists():
        return None
    try:
        return read_record(path, RUN_RESULT_KEYS)
    except DamagedFileError as err:
        moved = set_aside(path)
        warnings.warn(f"ignoring damaged {err} ({f'moved to {moved}' if moved else 'read-only folder'}); "
                      "recomputing from the checkpoints", RuntimeWarning, stacklevel=3)
        return None


def _build_model(cfg: RunConfig, data: Any, device: torch.device) -> nn.Module:
    seed_torch(cfg.seed)  # the init seed
    model = build_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels, width=cfg.width,
                        **cfg.model_options)
    return model.to(device)


# ---------------------------------------------------------------------- the run
class _Run:
    """State of one run between epochs (everything a checkpoint holds)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, data: Any, model: nn.Module,
                 prunable: dict[str, nn.Parameter], device: torch.device, channels_last: bool) -> None:
        self.cfg, self.run_dir, self.data, self.model, self.device = cfg, run_dir, data, model, device
        self.prunable = prunable  # the run's one prunable set (parameters of ``model``)
        self.channels_last = channels_last  # cfg.channels_last resolved (fts_core.setup.layout)
        self.optimizer = make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg.milestones, cfg.gamma)
        self.masks: dict[str, torch.Tensor] | None = None
        self.best: dict[str, Any] = {"state": None, "epoch": None, "val_accuracy": None}
        self.history: dict[str, list] = {k: [] for k in (
            "epoch", "sparse", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds")}
        self.scoring_seconds: float | None = None
        self.resumed_from: list[int] = []
        self.next_epoch = 0

    # -------------------------------------------------------------- checkpoints
    def _state(self, epoch: int) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CHECKPOINT_FORMAT, "epoch": epoch, "config_hash": self.cfg.config_hash(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "masks": self.masks, "best": self.best,
            "history": self.history, "scoring_seconds": self.scoring_seconds,
            "resumed_from": self.resumed_from, "rng": rng, "device": str(self.device),
        }

    def _problem(self, epoch: int, state: dict[str, Any]) -> str | None:
        """Why a checkpoint that loads cannot continue this run (None if it can)."""
        if state["format"] != CHECKPOINT_FORMAT:
            return f"format {state['format']} (expected {CHECKPOINT_FORMAT})"
        if state["config_hash"] != self.cfg.config_hash():
            return "written for a different config"
        if (state["masks"] is None) != (epoch < self.cfg.prune_epoch):
            return "mask presence does not match the epoch"
        return None

    def _restore(self) -> bool:
        found = latest_checkpoint(self.run_dir, map_location=self.device, required_keys=_REQUIRED,
                                  validate=self._problem)
        if found is None:
            return False
        epoch, state = found
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.masks = state["masks"]
        if self.masks is not None:
            apply_masks(self.model, self.masks, self.optimizer)  # idempotent on the restored values
            self._to_training_layout()
        self.best, self.history = state["best"], state["history"]
        self.scoring_seconds = state["scoring_seconds"]
        self.resumed_from = list(state["resumed_from"]) + [epoch + 1]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        self.next_epoch = epoch + 1
        return True

    def _save(self, epoch: int) -> None:
        save_checkpoint(self._state(epoch), checkpoint_path(self.run_dir, epoch))
        prune_checkpoints(self.run_dir, self.cfg.keep_checkpoints)

    # -------------------------------------------------------------- phases
    def _prune(self) -> None:
        """(BN refresh,) score, make masks, apply them (masking warm-up momentum too)."""
        cfg = self.cfg
        if cfg.warmup_kind == "bn" and cfg.warmup > 0:
            loader = self.data.loader("train", cfg.batch_size, seed=cfg.seed, augment=cfg.augment)
            for i in range(cfg.warmup):
                loader.set_epoch(i)
                refresh_batchnorm(self.model, loader)
        loader = self.data.loader("train", cfg.score_batch_size or cfg.batch_size, seed=cfg.seed,
                                  epoch=cfg.prune_epoch, augment=cfg.augment)
        synchronize(self.device)
        start = time.perf_counter()
        # bn_mode explicitly (default "eval", the authors'): score()'s own default refuses
        # per-sample criteria on BatchNorm in train mode, and the model is in train mode here
        scores = score(cfg.criterion, self.model, loader, num_samples=cfg.score_samples, per_class=cfg.per_class,
                       chunk_size=cfg.chunk_size, bn_mode=cfg.bn_mode, seed=cfg.seed, strategy=cfg.strategy,
                       prunable=self.prunable, quiet=cfg.quiet, options=cfg.criterion_options_record())
        masks = make_masks(scores, cfg.sparsity, scope=cfg.scope, rounding=cfg.rounding)
        synchronize(self.device)
        self.scoring_seconds = time.perf_counter() - start
        self.masks = {n: m.to(self.device) for n, m in masks.items()}
        apply_masks(self.model, self.masks, self.optimizer)
        self._to_training_layout()
        atomic_torch_save({n: m.cpu() for n, m in self.masks.items()}, self.run_dir / RUN_MASK)

    def _to_training_layout(self) -> None:
        """NHWC training (``channels_last`` resolved by :mod:`fts_core.setup.layout`): switch the pruned
        model's weights to NHWC (in place: parameters, their gradient hooks and optimizer state
        stay). Done after scoring, so criteria always see the default layout, and at the same
        point of a resumed run."""
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    @property
    def _nhwc_now(self) -> bool:
        """NHWC inputs now: only once the model was switched, i.e. after pruning."""
        return self.channels_last and self.masks is not None

    def _epoch(self, epoch: int, train_loader: Any, val_loader: Any) -> dict[str, float]:
        lr = self.optimizer.param_groups[0]["lr"]
        train_loader.set_epoch(epoch)
        tr = train_epoch(self.model, train_loader, self.optimizer, channels_last=self._nhwc_now, quiet=True)
        self.scheduler.step()
        va = evaluate(self.model, val_loader, channels_last=self._nhwc_now)
        sparse = self.masks is not None
        h = self.history
        for key, value in (("epoch", epoch), ("sparse", sparse), ("lr", lr), ("train_loss", tr["loss"]),
                           ("train_accuracy", tr["accuracy"]), ("val_loss", va["loss"]),
                           ("val_accuracy", va["accuracy"]), ("epoch_seconds", tr["seconds"])):
            h[key].append(value)
        if sparse and (self.best["val_accuracy"] is None or va["accuracy"] > self.best["val_accuracy"]):
            self.best = {"state": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                         "epoch": epoch, "val_accuracy": va["accuracy"]}
        return {"train_loss": tr["loss"], "val_accuracy": va["accuracy"], "lr": lr}

    def execute(self) -> dict[str, Any]:
        cfg = self.cfg
        if self._restore():
            _say(cfg, f"resuming {self.run_dir.name} after epoch {self.next_epoch - 1}")
        train_loader = self.data.loader("train", cfg.batch_size, seed=cfg.seed, augment=cfg.augment)
        val_loader = self.data.loader("val", cfg.batch_size)
        bar = None
        if not cfg.quiet:
            bar = tqdm(total=cfg.epochs, initial=self.next_epoch, desc=self.run_dir.name[:40], unit="epoch")
        try:
            for epoch in range(self.next_epoch, cfg.epochs):
                if epoch == cfg.prune_epoch and self.masks is None:
                    self._prune()
                shown = self._epoch(epoch, train_loader, val_loader)
                self._save(epoch)
                if bar is not None:
                    bar.set_postfix(loss=f"{shown['train_loss']:.3f}", val=f"{shown['val_accuracy']:.3f}",
                                    lr=f"{shown['lr']:.3g}")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        result = self._result()
        atomic_write_json(self.run_dir / RUN_RESULT, result)
        prune_checkpoints(self.run_dir, 1 if cfg.keep_checkpoints else 0)  # the final state is enough now
        return result

    # -------------------------------------------------------------- result
    def _result(self) -> dict[str, Any]:
        cfg, model, masks = self.cfg, self.model, self.masks
        assert masks is not None and self.best["state"] is not None
        test_loader = self.data.loader("test", cfg.batch_size)
        final = evaluate(model, test_loader, channels_last=self._nhwc_now)
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        params = dict(model.named_parameters())
        leaked = sum(int((params[n].detach()[~m] != 0).sum()) for n, m in masks.items())
        collapse = collapsed_layers(masks, model)
        if self.best["epoch"] == cfg.epochs - 1:  # the best-validation model is the final one
            best = final
        else:
            final_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(self.best["state"])
            best = evaluate(model, test_loader, channels_last=self._nhwc_now)
            model.load_state_dict(final_state)
        h = self.history
        sparse_seconds = [s for s, sp in zip(h["epoch_seconds"], h["sparse"]) if sp]
        result = {
            "run_name": self.run_dir.name,
            "run_dir": str(self.run_dir),
            "config": cfg.to_dict(),
            "config_hash": cfg.config_hash(),
            "test_accuracy_final": final["accuracy"],
            "test_loss_final": final["loss"],
            "test_accuracy_best_val": best["accuracy"],
            "test_loss_best_val": best["loss"],
            "best_epoch": self.best["epoch"],
            "best_val_accuracy": self.best["val_accuracy"],
            "prune_epoch": cfg.prune_epoch,
            "history": h,
            "val_accuracy": h["val_accuracy"],
            "train_loss": h["train_loss"],
            "realised_sparsity": 1.0 - kept / total,
            "prunable_weights": total,
            "kept_weights": kept,
            "pruned_weights_nonzero": leaked,
            "layer_density": layer_density(masks),
            "collapsed_layers": list(collapse),
            "collapse": collapse.to_dict(),
            "scoring_seconds": self.scoring_seconds,
            "epoch_seconds": h["epoch_seconds"],
            "mean_sparse_epoch_seconds": sum(sparse_seconds) / len(sparse_seconds) if sparse_seconds else None,
            "resumed_from": self.resumed_from,
            "channels_last": self.channels_last,
            "provenance": provenance(self.device),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return json.loads(json.dumps(result))  # exactly what result.json gives back


# ---------------------------------------------------------------------- helpers
def _say(cfg: RunConfig, message: str) -> None:
    if not cfg.quiet:
        print(f"[fts_core.run] {message}", file=sys.stderr, flush=True)
