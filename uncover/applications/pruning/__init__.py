"""Interpretability-guided pruning (survey section 5.2): importance, iterative pruning, smaller models.

    from uncover.applications.pruning import importance, prune_iteratively, prune_model, save_pruned
    scores = importance(model, calibration_tokens, "gradient", "heads")
    plan = prune_iteratively(model, calibration_tokens, "gradient", "heads", [0.2])[-1]
    smaller = prune_model(model, plan); save_pruned(smaller, "pruned/")
"""
from uncover.applications.pruning.curves import (
    EvalSet, PruningCurves, eval_set, evaluate, perplexity, prune_iteratively, pruning_curves, split_corpus,
)
from uncover.applications.pruning.importance import METHODS, Importance, importance, wanda_mask
from uncover.applications.pruning.physical import forward_seconds, n_params, prune_model, save_pruned
from uncover.applications.pruning.plan import PruningPlan, check_share, select

__all__ = [
    "EvalSet", "Importance", "METHODS", "PruningCurves", "PruningPlan", "check_share", "eval_set", "evaluate",
    "forward_seconds", "importance", "n_params", "perplexity", "prune_iteratively", "prune_model",
    "pruning_curves", "save_pruned", "select", "split_corpus", "wanda_mask",
]
