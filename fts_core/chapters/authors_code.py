"""What the authors' code computed where it differs from what it means (chapter 1's last section).

The two defects of the official code that change the paper's numbers, FBSS without damping and the
2026 revision's SynFlow schedule, are reproduced on request elsewhere (``convention="authors"``,
``rounding="authors"``; ``book/guide.md``, "Reproducing what the authors' code computed"). The
functions here measure both on a model, for the chapter's tables and figures:
:func:`fisher_zero_share`, :func:`fbss_masks`, :func:`synflow_history`.
"""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd
import torch
from torch import nn

from fts_core.scoring import score
from fts_core.masks import make_masks, prunable_parameters
from fts_core.scoring.synflow import synflow_scores

__all__ = ["fisher_zero_share", "fbss_masks", "synflow_history"]


def _eval_copy_flags(model: nn.Module) -> nn.Module:
    if model.training:
        raise ValueError("pass the model in eval mode (the authors score with running statistics)")
    return model


def fisher_zero_share(model: nn.Module, batches: Iterable, *, prunable: str = "authors") -> pd.DataFrame:
    """Per prunable layer: ``layer`` (name), ``depth`` (0 = input side), ``size``, ``zero_share``
    (fraction of its weights with F̂ exactly 0 on ``batches``). ``model`` in eval mode."""
    fisher = score("fisher_diag", _eval_copy_flags(model), batches, prunable=prunable)
    return pd.DataFrame([{"layer": n, "depth": i, "size": f.numel(), "zero_share": float((f == 0).double().mean())}
                         for i, (n, f) in enumerate(fisher.items())])


def fbss_masks(model: nn.Module, batches: Iterable, sparsity: float, *,
               prunable: str = "authors") -> dict[str, Any]:
    """The authors' FBSS mask and ours at ``sparsity``, and what they keep.

    Returns ``{"kept": int, "kept_zero_fisher": {"authors": share, "ours": share}`` (share of
    the kept weights that have F̂ = 0), ``"overlap"`` (shared kept weights / kept),
    ``"density": DataFrame(layer, depth, authors, ours)``, ``"zero_fisher_total"`` (weights with
    F̂ = 0) and ``"masks": {"authors": ..., "ours": ...}``}."""
    model = _eval_copy_flags(model)
    fisher = score("fisher_diag", model, batches, prunable=prunable)
    theirs = make_masks(score("fbss", model, batches, prunable=prunable, convention="authors"), sparsity,
                        rounding="authors")
    ours = make_masks(score("fbss", model, batches, prunable=prunable), sparsity)
    zero = {n: f == 0 for n, f in fisher.items()}

    def share(masks: dict[str, torch.Tensor]) -> float:
        kept = sum(int(m.sum()) for m in masks.values())
        return sum(int((m & zero[n]).sum()) for n, m in masks.items()) / kept

    kept = sum(int(m.sum()) for m in theirs.values())
    both = sum(int((theirs[n] & ours[n]).sum()) for n in theirs)
    density = pd.DataFrame([{"layer": n, "depth": i, "authors": float(theirs[n].double().mean()),
                             "ours": float(ours[n].double().mean())} for i, n in enumerate(theirs)])
    return {"kept": kept, "kept_zero_fisher": {"authors": share(theirs), "ours": share(ours)},
            "overlap": both / kept, "density": density,
            "zero_fisher_total": sum(int(z.sum()) for z in zero.values()), "masks": {"authors": theirs, "ours": ours}}


def synflow_history(model: nn.Module, input_shape: tuple[int, ...], sparsity: float, *, rounds: int = 100,
                    prunable: str = "authors") -> pd.DataFrame:
    """Per round of SynFlow, ours and the revision's: ``convention``, ``round``, ``kept_fraction``
    (weights left non-zero after the round), ``nonzero_score_fraction`` (weights with a score > 0
    in that round), plus ``final_tensors_kept``: how many prunable tensors keep a weight in the
    final mask (``make_masks`` of the last round's scores, each convention's rounding)."""
    names = list(prunable_parameters(model, prunable))
    total = sum(p.numel() for n, p in model.named_parameters() if n in names)
    rows = []
    for convention, rounding in (("ours", "nearest"), ("authors", "authors")):
        history: list[dict[str, Any]] = []
        scores = synflow_scores(model, names, input_shape, sparsity=sparsity, rounds=rounds, convention=convention,
                                double=convention == "ours", history=history)
        final = make_masks(scores, sparsity, rounding=rounding)
        tensors = sum(bool(m.any()) for m in final.values())
        kept_final = sum(int(m.sum()) for m in final.values())
        for h in history:
            kept = kept_final if h["round"] == rounds else h["kept"]
            rows.append({"convention": convention, "round": h["round"], "kept_fraction": kept / total,
                         "nonzero_score_fraction": h["nonzero_scores"] / total, "final_tensors_kept": tensors,
                         "tensors": len(names)})
    return pd.DataFrame(rows)
