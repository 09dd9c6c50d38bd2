"""fts_core: Fisher-Taylor Sensitivity (FTS) and its baselines for pruning at initialization.

The public names are imported lazily, so ``import fts_core`` stays fast and does not pull
in Ray, pandas or matplotlib until they are used::

    import fts_core
    data = fts_core.load_data("digits", seed=0)
    model = fts_core.build_model("resnet18", num_classes=data.num_classes,
                                 in_channels=data.in_channels, width=0.25)
    scores = fts_core.score("fts", model, data.loader("train", batch_size=128), bn_mode="eval")
    masks = fts_core.make_masks(scores, sparsity=0.9)
    fts_core.apply_masks(model, masks)
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # models
    "MODELS": "models",
    "build_model": "models",
    "register_model": "models",
    # data
    "DATASETS": "data",
    "load_data": "data",
    "register_dataset": "data",
    "DataBundle": "data",
    "TensorLoader": "data",
    # scoring
    "CRITERIA": "criteria",
    "score": "criteria",
    # masks
    "prunable_parameters": "masks",
    "make_masks": "masks",
    "apply_masks": "masks",
    "layer_density": "masks",
    "collapsed_layers": "masks",
    "shuffle_masks": "ablations",
    "reinit_kept": "ablations",
    "invert_scores": "ablations",
    # training and runs
    "RunConfig": "config",
    "run": "runner",
    "train_epoch": "training",
    "evaluate": "training",
    "sweep": "sweeps",
    "load_results": "results",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fts_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fts_core.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
