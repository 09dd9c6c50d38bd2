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
    # setup: models and data
    "MODELS": "setup.models",
    "build_model": "setup.models",
    "register_model": "setup.models",
    "DATASETS": "setup.datasets",
    "register_dataset": "setup.datasets",
    "load_data": "setup.data",
    "DataBundle": "setup.loader",
    "TensorLoader": "setup.loader",
    # scoring
    "CRITERIA": "scoring",
    "criterion": "scoring",
    "score": "scoring",
    # masks
    "prunable_parameters": "masks",
    "make_masks": "masks",
    "apply_masks": "masks",
    "remove_masks": "masks",
    "layer_density": "masks",
    "collapsed_layers": "masks",
    "shuffle_masks": "masks",
    "reinit_kept": "masks",
    "invert_scores": "masks",
    # experiments: training and runs
    "RunConfig": "experiments.config",
    "run": "experiments.runner",
    "train_epoch": "experiments.training",
    "evaluate": "experiments.training",
    "sweep": "experiments.sweeps",
    "load_results": "experiments.results",
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
