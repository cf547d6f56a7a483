"""Metrics on hand-made examples with hand-computed values (label 1 = member, higher = member)."""

import json
import math
import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mia_tuner.metrics import (
    Metrics,
    _bootstrap_indices,
    best_balanced_accuracy,
    bootstrap_auroc_interval,
    bootstrap_aurocs,
    compute_metrics,
    fpr_at_tpr,
    threshold_for_fpr,
    tpr_at_fpr,
    tpr_key,
)

# 4 members, 4 non-members, one tie across classes (0.5).
# Pairs member > non-member: 0.9 -> 4, 0.7 -> 3, 0.5 -> 2 + 1/2 (tie), 0.3 -> 2; 11.5 / 16.
# ROC points (threshold: FPR, TPR): inf:(0,0) .9:(0,.25) .8:(.25,.25) .7:(.25,.5)
#   .5:(.5,.75) .3:(.5,1) .2:(.75,1) .1:(1,1)
LABELS = [1, 1, 1, 1, 0, 0, 0, 0]
SCORES = [0.9, 0.7, 0.5, 0.3, 0.8, 0.5, 0.2, 0.1]


def test_perfect_and_reversed_orientation():
    labels = [1, 1, 0, 0]
    assert compute_metrics(labels, [4, 3, 2, 1], n_bootstrap=0).auroc == 1.0
    assert compute_metrics(labels, [1, 2, 3, 4], n_bootstrap=0).auroc == 0.0
    assert compute_metrics(labels, [1, 1, 1, 1], n_bootstrap=0).auroc == 0.5


def test_auroc_by_counting_pairs():
    assert compute_metrics(LABELS, SCORES, n_bootstrap=0).auroc == pytest.approx(11.5 / 16)


def test_tpr_at_fpr_hand_computed():
    assert tpr_at_fpr(LABELS, SCORES, 0.0) == 0.25
    assert tpr_at_fpr(LABELS, SCORES, 0.1) == 0.25
    assert tpr_at_fpr(LABELS, SCORES, 0.25) == 0.5
    assert tpr_at_fpr(LABELS, SCORES, 0.4) == 0.5
    assert tpr_at_fpr(LABELS, SCORES, 0.5) == 1.0
    # top non-member above every member: nothing is detected at FPR 0
    assert tpr_at_fpr([1, 1, 0, 0], [2, 1, 3, 0], 0.0) == 0.0


def test_fpr_at_tpr_hand_computed():
    assert fpr_at_tpr(LABELS, SCORES) == 0.5
    assert fpr_at_tpr(LABELS, SCORES, 0.5) == 0.25
    assert fpr_at_tpr(LABELS, SCORES, 0.25) == 0.0
    assert fpr_at_tpr([1, 1, 0, 0], [4, 3, 2, 1], 0.95) == 0.0


def test_balanced_accuracy_and_threshold():
    # score >= 0.3: all 4 members, non-members 0.8 and 0.5 -> (1 + 0.5) / 2
    acc, threshold = best_balanced_accuracy(LABELS, SCORES)
    assert acc == 0.75 and threshold == 0.3
    acc, threshold = best_balanced_accuracy([1, 1, 0, 0], [4, 3, 2, 1])
    assert acc == 1.0 and threshold == 3
    # useless score: 0.5, with a finite threshold
    acc, threshold = best_balanced_accuracy([1, 0], [1.0, 1.0])
    assert acc == 0.5 and threshold == 1.0


def test_compute_metrics_fields_and_dict():
    m = compute_metrics(LABELS, SCORES, n_bootstrap=200, seed=3)
    assert m.n_member == 4 and m.n_nonmember == 4
    assert set(m.tpr_at_fpr) == {0.001, 0.01, 0.05, 0.1}
    assert m.fpr_at_95_tpr == 0.5
    d = m.to_dict()
    assert list(d) == [
        "auroc", "auroc_low", "auroc_high", "tpr_at_0.1_fpr", "tpr_at_1_fpr",
        "tpr_at_5_fpr", "tpr_at_10_fpr", "fpr_at_95_tpr", "balanced_accuracy",
        "threshold", "n_member", "n_nonmember",
    ]
    assert Metrics.from_dict(json.loads(json.dumps(d))) == m


def test_to_dict_without_bootstrap_is_strict_json():
    d = compute_metrics(LABELS, SCORES, n_bootstrap=0).to_dict()
    assert d["auroc_low"] is None and d["auroc_high"] is None
    json.dumps(d, allow_nan=False)
    assert math.isnan(Metrics.from_dict(d).auroc_low)


def test_tpr_key():
    assert tpr_key(0.001) == "tpr_at_0.1_fpr"
    assert tpr_key(0.1) == "tpr_at_10_fpr"


def _noisy(n_per_class=100, seed=1):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_per_class, int), np.zeros(n_per_class, int)]
    return labels, rng.normal(size=labels.size) + 0.6 * labels


def test_bootstrap_interval_contains_estimate_and_is_deterministic():
    labels, scores = _noisy()
    auroc = roc_auc_score(labels, scores)
    low, high = bootstrap_auroc_interval(labels, scores, 1000, seed=7)
    assert low < auroc < high
    assert 0.0 <= low and high <= 1.0
    assert (low, high) == bootstrap_auroc_interval(labels, scores, 1000, seed=7)
    assert (low, high) != bootstrap_auroc_interval(labels, scores, 1000, seed=8)


def test_bootstrap_vectorised_matches_slow_loop():
    labels = np.array([1, 0, 1, 0, 1, 0, 0, 1, 1])
    scores = np.array([0.3, 0.3, 0.9, 0.1, 0.5, 0.7, 0.5, 0.2, 0.5])
    fast = bootstrap_aurocs(labels, scores, n_bootstrap=50, seed=5)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pos_idx, neg_idx = _bootstrap_indices(pos.size, neg.size, 50, 5)
    slow = []
    for p_row, n_row in zip(pos_idx, neg_idx):
        y = np.r_[np.ones(p_row.size), np.zeros(n_row.size)]
        slow.append(roc_auc_score(y, np.r_[pos[p_row], neg[n_row]]))
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_bootstrap_chunking_gives_same_result(monkeypatch):
    import mia_tuner.metrics as metrics

    labels, scores = _noisy(20)
    whole = bootstrap_aurocs(labels, scores, 30, seed=2)
    monkeypatch.setattr(metrics, "_BOOTSTRAP_CHUNK_CELLS", 100)
    np.testing.assert_array_equal(whole, bootstrap_aurocs(labels, scores, 30, seed=2))


def test_bootstrap_is_fast():
    labels, scores = _noisy(100)
    start = time.perf_counter()
    bootstrap_auroc_interval(labels, scores, 1000, seed=0)
    assert time.perf_counter() - start < 0.5


def test_threshold_for_fpr():
    values = [0.1 * i for i in range(1, 11)]  # 0.1 .. 1.0
    assert threshold_for_fpr(values, 0.1) == pytest.approx(1.0)
    assert threshold_for_fpr(values, 0.2) == pytest.approx(0.9)
    assert threshold_for_fpr(values, 0.25) == pytest.approx(0.9)  # floor(2.5) = 2 allowed
    assert threshold_for_fpr(values, 1.0) == pytest.approx(0.1)
    above_max = threshold_for_fpr(values, 0.0)
    assert above_max > 1.0 and above_max == pytest.approx(1.0)
    # ties at the top: two scores at 3, only one allowed -> just above 3
    assert threshold_for_fpr([0, 1, 2, 3, 3], 0.2) > 3
    assert threshold_for_fpr([0, 1, 2, 3, 3], 0.4) == 3
    assert threshold_for_fpr(list(range(100)), 0.29) == 71  # 0.29*100 rounds below 29


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.1, 0.3, 1.0])
def test_threshold_for_fpr_respects_target(target):
    values = np.random.default_rng(0).normal(size=137).round(1)  # many ties
    threshold = threshold_for_fpr(values, target)
    assert np.mean(values >= threshold) <= target + 1e-12


def test_threshold_for_fpr_errors():
    with pytest.raises(ValueError):
        threshold_for_fpr([], 0.1)
    with pytest.raises(ValueError):
        threshold_for_fpr([1.0, 2.0], 1.5)
    with pytest.raises(ValueError, match="1 of 2"):
        threshold_for_fpr([1.0, np.nan], 0.1)


def test_errors():
    with pytest.raises(ValueError, match="both members and non-members"):
        compute_metrics([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="both members and non-members"):
        tpr_at_fpr([0, 0], [0.1, 0.2], 0.1)
    with pytest.raises(ValueError, match="2 of 4 scores are not finite"):
        compute_metrics([1, 0, 1, 0], [0.1, np.nan, np.inf, 0.3])
    with pytest.raises(ValueError, match="0 .* or 1"):
        compute_metrics([1, 0, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        compute_metrics([1, 0, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        bootstrap_auroc_interval(LABELS, SCORES, n_bootstrap=0, seed=0)
