"""Classification metrics: hand-computed AP, AUC, top-k, KS distance, against scikit-learn / SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from eval.classification import (average_precision_per_class, classification_report, ks_distance, macro_roc_auc,
                                 mean_average_precision, target_and_confusing_probs, topk_accuracy)


def test_average_precision_hand_computed():
    y = np.array([[1], [0], [1], [0]])
    s = np.array([[0.9], [0.8], [0.7], [0.1]])
    # ranks: pos (P=1), neg, pos (P=2/3), neg -> AP = (1 + 2/3) / 2
    assert average_precision_per_class(y, s)[0] == pytest.approx(5 / 6)


def test_map_skips_classes_without_positives():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.3], [0.1, 0.2], [0.8, 0.1]])
    ap = average_precision_per_class(y, s)
    assert ap[0] == 1.0 and np.isnan(ap[1])
    assert mean_average_precision(y, s) == 1.0


def test_macro_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(50, 4))
    s = rng.random((50, 4)) + 0.5 * y
    assert macro_roc_auc(y, s) == pytest.approx(roc_auc_score(y, s, average="macro"))
    perfect = macro_roc_auc(np.array([[1], [0]]), np.array([[0.9], [0.1]]))
    assert perfect == 1.0


def test_topk_hand_computed():
    scores = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    targets = np.array([2, 0, 0])
    acc = topk_accuracy(scores, targets, ks=(1, 2, 3))
    assert acc == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}
    with pytest.raises(ValueError, match="target class outside"):
        topk_accuracy(scores, np.array([3, 0, 0]))


def test_ks_distance_known_answers():
    assert ks_distance([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]) == 0.0
    assert ks_distance([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert ks_distance([1.0, 2.0, 3.0], [2.5]) == pytest.approx(2 / 3)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=40), rng.normal(0.5, size=31)
    assert ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic)
    with pytest.raises(ValueError, match="non-empty"):
        ks_distance([], [1.0])


def test_target_and_confusing_probs():
    probs = np.array([[0.9, 0.6, 0.2], [0.1, 0.3, 0.8]])
    multi_hot = np.array([[1, 0, 0], [0, 1, 1]])
    t, c = target_and_confusing_probs(probs, multi_hot)
    np.testing.assert_allclose(t, [0.9, 0.3, 0.8])  # every ground-truth class is a target
    np.testing.assert_allclose(c, [0.6, 0.1])  # highest-scoring non-ground-truth class
    t1, c1 = target_and_confusing_probs(probs, np.array([1, 2]))  # single-label indices
    np.testing.assert_allclose(t1, [0.6, 0.8])
    np.testing.assert_allclose(c1, [0.9, 0.3])


def test_report_keys():
    y = np.array([[1, 0], [0, 1], [1, 1]])
    s = np.array([[2.0, -1.0], [-1.0, 1.0], [0.5, 0.2]])
    r = classification_report(y, s, class_names=["a", "b"])
    assert r["map"] == 1.0 and set(r["per_class_ap"]) == {"a", "b"}
    assert 0 <= r["ks_target_vs_confusing"] <= 1
