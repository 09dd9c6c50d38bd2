"""Scores: the criteria (one registry), ``score()``, and the statistics they are made of.

``registry`` (a criterion's record and typed options), ``criteria`` (the criterion functions),
``formulas`` (the Taylor-family saliencies as pure functions), ``score`` (the entry point),
``context`` (what a criterion sees), ``samples`` (the scoring sample), ``persample`` (ĝ and F̂ in
one pass), ``curvature`` (Hĝ, Hutchinson), ``synflow``, ``gradients`` (shared helpers).
"""
from fts_core.scoring import criteria  # noqa: F401  (registers the built-in criteria)
from fts_core.scoring.context import ScoringContext
from fts_core.scoring.persample import STRATEGIES
from fts_core.scoring.registry import CRITERIA, Criterion, NoOptions, Options, criterion, option
from fts_core.scoring.score import BN_MODES, ScoringCall, check_bn_mode, check_scoring, score

__all__ = ["CRITERIA", "Criterion", "Options", "NoOptions", "criterion", "option", "score", "check_scoring",
           "ScoringCall", "BN_MODES", "check_bn_mode", "STRATEGIES", "ScoringContext"]
