"""Masks: which weights are prunable, scores -> keep-masks, enforcing them in training, reports.

``prunable`` (which weights), ``select`` (how many and which are kept: the one global top-k),
``enforce`` (pruned weights stay exactly 0), ``reports`` (per-layer density, layer collapse),
``ablations`` (shuffled masks, re-initialised weights, inverted scores).
"""
from fts_core.masks.ablations import invert_scores, reinit_kept, shuffle_masks
from fts_core.masks.enforce import apply_masks, is_masked, mask_optimizer_state, remove_masks
from fts_core.masks.prunable import PRUNABLE_RULES, check_masks, owner, prunable_parameters
from fts_core.masks.reports import CollapseReport, collapsed_layers, layer_density, mask_summary
from fts_core.masks.select import ROUNDINGS, SCOPES, authors_top_k_mask, make_masks, num_kept, split_like, top_k_mask

__all__ = ["PRUNABLE_RULES", "ROUNDINGS", "SCOPES", "prunable_parameters", "check_masks", "owner", "make_masks",
           "num_kept", "top_k_mask", "authors_top_k_mask", "split_like", "apply_masks", "remove_masks", "is_masked",
           "mask_optimizer_state", "layer_density", "mask_summary", "collapsed_layers", "CollapseReport",
           "shuffle_masks", "reinit_kept", "invert_scores"]
