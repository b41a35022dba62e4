"""Classification metrics (docs/method.md §6): per-class AP and mAP, macro ROC AUC, top-k accuracy, and the
Kolmogorov–Smirnov distance between the target-class and most-confusing-class probabilities.

AP is scikit-learn's uninterpolated average precision. A class with no positive example has no
AP (NaN) and is left out of the mean, as is a class without both positives and negatives for AUC.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _check_multilabel(targets: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    targets, scores = _as_numpy(targets), _as_numpy(scores).astype(np.float64)
    if targets.ndim != 2 or targets.shape != scores.shape:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} must both be (N, classes)")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("multi-label targets must be 0 or 1")
    return targets.astype(np.int64), scores


def average_precision_per_class(targets: Any, scores: Any) -> np.ndarray:
    """AP of each class (column); NaN where the class has no positive example."""
    targets, scores = _check_multilabel(targets, scores)
    ap = np.full(targets.shape[1], np.nan)
    for c in range(targets.shape[1]):
        if targets[:, c].any():
            ap[c] = average_precision_score(targets[:, c], scores[:, c])
    return ap


def mean_average_precision(targets: Any, scores: Any) -> float:
    """mAP over the classes that have at least one positive."""
    ap = average_precision_per_class(targets, scores)
    return float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")


def macro_roc_auc(targets: Any, scores: Any) -> float:
    """Mean ROC AUC over the classes that have both positive and negative examples."""
    targets, scores = _check_multilabel(targets, scores)
    aucs = [
        roc_auc_score(targets[:, c], scores[:, c])
        for c in range(targets.shape[1])
        if 0 < targets[:, c].sum() < targets.shape[0]
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def topk_accuracy(scores: Any, targets: Any, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Single-label top-k accuracy: the share of samples whose class is among the k highest scores."""
    scores, targets = _as_numpy(scores), _as_numpy(targets).astype(np.int64)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (N, classes) and targets (N,), got {scores.shape} and {targets.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"target class outside 0..{scores.shape[1] - 1}")
    # Rank of the true class = number of classes scoring strictly higher (ties count in its favour).
    true_scores = scores[np.arange(len(targets)), targets]
    rank = (scores > true_scores[:, None]).sum(1)
    return {k: float((rank < k).mean()) if len(targets) else float("nan") for k in ks}


def target_and_confusing_probs(probs: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the target class(es) and of the most confusing class, per sample.

    ``targets`` is multi-hot (N, C) for multi-label data (every ground-truth class is a
    target, the most confusing class is the highest-scoring non-ground-truth class) or class
    indices (N,) for single-label data.
    """
    probs, targets = _as_numpy(probs).astype(np.float64), _as_numpy(targets)
    if targets.ndim == 1:
        onehot = np.zeros_like(probs, dtype=bool)
        onehot[np.arange(len(targets)), targets.astype(np.int64)] = True
    else:
        onehot = targets.astype(bool)
    if onehot.shape != probs.shape:
        raise ValueError(f"targets {targets.shape} do not match probabilities {probs.shape}")
    negatives = np.where(onehot, -np.inf, probs)
    has_negative = ~onehot.all(1)
    confusing = negatives.max(1)[has_negative]
    target = probs[onehot]
    return target, confusing


def ks_distance(a: Any, b: Any) -> float:
    """Two-sample Kolmogorov–Smirnov statistic ``sup_x |F_a(x) - F_b(x)|`` of two samples."""
    a, b = np.sort(_as_numpy(a).ravel()), np.sort(_as_numpy(b).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError("the KS distance needs two non-empty samples")
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(cdf_a - cdf_b).max())


def classification_report(targets: Any, scores: Any, probs: Any | None = None,
                          class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """All multi-label metrics as one JSON-ready dict (scores: logits or probabilities)."""
    targets_np, scores_np = _check_multilabel(targets, scores)
    probs_np = _as_numpy(probs) if probs is not None else 1.0 / (1.0 + np.exp(-scores_np))
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(targets_np.shape[1])]
    ap = average_precision_per_class(targets_np, scores_np)
    target_p, confusing_p = target_and_confusing_probs(probs_np, targets_np)
    return {
        "map": mean_average_precision(targets_np, scores_np),
        "macro_auc": macro_roc_auc(targets_np, scores_np),
        "ks_target_vs_confusing": ks_distance(target_p, confusing_p) if target_p.size and confusing_p.size else None,
        "per_class_ap": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, ap)},
    }
