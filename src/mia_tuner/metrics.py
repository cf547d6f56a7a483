"""Evaluation metrics of a membership-inference score.

Conventions used throughout:

* label 1 = member (the positive class), label 0 = non-member;
* a score is HIGHER for a text that is more likely a member;
* a text is predicted a member when ``score >= threshold``.

ROC points come from :func:`sklearn.metrics.roc_curve` with ``drop_intermediate=False``,
so every distinct score value is a point; the first point is (FPR 0, TPR 0) at an
infinite threshold and the last is (1, 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from .errors import DataError

DEFAULT_FPR_LEVELS = (0.001, 0.01, 0.05, 0.1)
_BOOTSTRAP_CHUNK_CELLS = 4_000_000  # resample matrix cells ranked at once (memory bound)


# Below this many test texts per class an AUROC and its bootstrap interval say little (a
# perfect 1.000 [1.000, 1.000] is two lucky orderings away on 2 + 2 texts), and TPR at 1% FPR
# cannot be measured: tables and metrics.json say so next to the numbers.
MIN_TEST_PER_CLASS = 20


def sample_size_warning(labels) -> str | None:
    """A warning when the test texts hold fewer than MIN_TEST_PER_CLASS of a class, else None."""
    labels = np.asarray(labels)
    n_member, n_nonmember = int((labels == 1).sum()), int((labels == 0).sum())
    if min(n_member, n_nonmember) >= MIN_TEST_PER_CLASS:
        return None
    return (f"warning: only {n_member} members and {n_nonmember} non-members are scored (fewer than "
            f"{MIN_TEST_PER_CLASS} per class): these AUROCs and intervals are too noisy to read, and TPR "
            "at low FPR cannot be measured; use a larger set or a larger --test-per-class")


def wrong_way_warning(label: str, validation_auroc: float | None) -> str | None:
    """A warning for a learned detector whose validation AUROC is below 0.5 (its test scores
    are reported as they are: no detector is ever flipped on the quiet), else None."""
    if validation_auroc is None or not validation_auroc < 0.5:
        return None
    return (f"warning: `{label}` ranks its validation texts the wrong way round (validation AUROC "
            f"{validation_auroc:.3f} < 0.5); its test row is shown as computed, not flipped")


def tpr_key(fpr: float) -> str:
    """The ``to_dict`` key of TPR at a FPR level, in percent: 0.001 -> ``"tpr_at_0.1_fpr"``."""
    return f"tpr_at_{fpr * 100:g}_fpr"


def _fpr_from_key(key: str) -> float | None:
    """Inverse of :func:`tpr_key`; None for other keys."""
    if not (key.startswith("tpr_at_") and key.endswith("_fpr")):
        return None
    return round(float(key[len("tpr_at_"):-len("_fpr")]) / 100, 12)


def _finite_or_none(value: float) -> float | None:
    """A float for JSON: NaN and infinities become None."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Metrics:
    """Summary of how well one score separates members from non-members."""

    auroc: float
    auroc_low: float  # bootstrap 95% percentile interval (NaN if no bootstrap)
    auroc_high: float
    tpr_at_fpr: dict[float, float] = field(default_factory=dict)  # FPR level -> TPR
    fpr_at_95_tpr: float = float("nan")
    balanced_accuracy: float = float("nan")  # best over thresholds of (TPR + TNR) / 2
    threshold: float = float("nan")  # achieves balanced_accuracy (score >= threshold -> member)
    n_member: int = 0
    n_nonmember: int = 0

    def to_dict(self) -> dict:
        """A JSON-friendly flat dict; TPR keys name the FPR in percent (``tpr_at_1_fpr``)."""
        out: dict = {
            "auroc": _finite_or_none(self.auroc),
            "auroc_low": _finite_or_none(self.auroc_low),
            "auroc_high": _finite_or_none(self.auroc_high),
        }
        for level in sorted(self.tpr_at_fpr):
            out[tpr_key(level)] = _finite_or_none(self.tpr_at_fpr[level])
        out["fpr_at_95_tpr"] = _finite_or_none(self.fpr_at_95_tpr)
        out["balanced_accuracy"] = _finite_or_none(self.balanced_accuracy)
        out["threshold"] = _finite_or_none(self.threshold)
        out["n_member"] = int(self.n_member)
        out["n_nonmember"] = int(self.n_nonmember)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Metrics":
        """Rebuild from :meth:`to_dict` output (None becomes NaN; unknown keys ignored)."""

        def num(key: str) -> float:
            value = data.get(key)
            return float("nan") if value is None else float(value)

        tprs = {}
        for key, value in data.items():
            level = _fpr_from_key(key)
            if level is not None:
                tprs[level] = float("nan") if value is None else float(value)
        return cls(
            auroc=num("auroc"), auroc_low=num("auroc_low"), auroc_high=num("auroc_high"),
            tpr_at_fpr=tprs, fpr_at_95_tpr=num("fpr_at_95_tpr"),
            balanced_accuracy=num("balanced_accuracy"), threshold=num("threshold"),
            n_member=int(data.get("n_member", 0)), n_nonmember=int(data.get("n_nonmember", 0)),
        )


def validate_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert labels/scores to arrays (int labels, float scores).

    Raises ``DataError`` (a ``ValueError``) on length mismatch, labels other than 0/1,
    a missing class, or non-finite scores.
    """
    labels_arr = np.asarray(labels).ravel()
    scores_arr = np.asarray(scores, dtype=float).ravel()
    if labels_arr.shape != scores_arr.shape:
        raise DataError(f"{labels_arr.size} labels but {scores_arr.size} scores")
    if labels_arr.size and not np.isin(labels_arr, (0, 1)).all():
        bad = sorted({repr(v) for v in labels_arr[~np.isin(labels_arr, (0, 1))].tolist()})
        raise DataError(f"labels must be 0 (non-member) or 1 (member); found {', '.join(bad[:5])}")
    labels_arr = labels_arr.astype(int)
    n_bad = int((~np.isfinite(scores_arr)).sum())
    if n_bad:
        raise DataError(f"{n_bad} of {scores_arr.size} scores are not finite (NaN or inf)")
    n_member = int(labels_arr.sum())
    if n_member == 0 or n_member == labels_arr.size:
        raise DataError(
            f"need both members and non-members; got {n_member} members and "
            f"{labels_arr.size - n_member} non-members"
        )
    return labels_arr, scores_arr


def _roc(labels: np.ndarray, scores: np.ndarray):
    """All ROC points (fpr, tpr, thresholds), intermediate ones kept."""
    return roc_curve(labels, scores, drop_intermediate=False)


def tpr_at_fpr(labels, scores, fpr: float) -> float:
    """The largest TPR among ROC points whose FPR is <= ``fpr``.

    This is the TPR of the best threshold that keeps the false-positive rate at or below
    the level (no interpolation between points). It is 0 when even the highest-scoring
    non-member ties with every member.
    """
    labels, scores = validate_scores(labels, scores)
    fprs, tprs, _ = _roc(labels, scores)
    return float(tprs[fprs <= fpr + 1e-12].max())


def fpr_at_tpr(labels, scores, tpr: float = 0.95) -> float:
    """The smallest FPR among ROC points whose TPR is >= ``tpr`` (no interpolation)."""
    labels, scores = validate_scores(labels, scores)
    fprs, tprs, _ = _roc(labels, scores)
    return float(fprs[tprs >= tpr - 1e-12].min())


def best_balanced_accuracy(labels, scores) -> tuple[float, float]:
    """The best ``(TPR + TNR) / 2`` over thresholds and the threshold achieving it.

    Only thresholds equal to an observed score are considered (the infinite "nobody is a
    member" point is skipped; it ties with "everybody is a member" at 0.5). On ties the
    highest threshold wins.
    """
    labels, scores = validate_scores(labels, scores)
    fprs, tprs, thresholds = _roc(labels, scores)
    balanced = (tprs[1:] + 1.0 - fprs[1:]) / 2.0
    best = int(np.argmax(balanced))
    return float(balanced[best]), float(thresholds[1:][best])


def _bootstrap_indices(n_pos: int, n_neg: int, n_bootstrap: int, seed: int):
    """Stratified resample indices: (n_bootstrap, n_pos) into members, (n_bootstrap, n_neg) into non-members."""
    rng = np.random.default_rng(seed)
    pos_idx = rng.integers(0, n_pos, size=(n_bootstrap, n_pos))
    neg_idx = rng.integers(0, n_neg, size=(n_bootstrap, n_neg))
    return pos_idx, neg_idx


def _rank_aurocs(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """Row-wise AUROC of (B, n_pos) member and (B, n_neg) non-member score matrices.

    Mann-Whitney: AUROC = (sum of member ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg),
    with average ranks so ties count 1/2.
    """
    n_pos, n_neg = pos_scores.shape[1], neg_scores.shape[1]
    ranks = rankdata(np.concatenate([pos_scores, neg_scores], axis=1), axis=1)
    rank_sum = ranks[:, :n_pos].sum(axis=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def bootstrap_aurocs(labels, scores, n_bootstrap: int = 1000, seed: int = 0) -> np.ndarray:
    """AUROC of each of ``n_bootstrap`` class-stratified resamples (vectorised).

    Members are resampled with replacement among members and non-members among
    non-members, so each resample keeps the class sizes and has both classes.
    """
    labels, scores = validate_scores(labels, scores)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pos_idx, neg_idx = _bootstrap_indices(pos.size, neg.size, n_bootstrap, seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // labels.size)
    parts = [
        _rank_aurocs(pos[pos_idx[start:start + chunk]], neg[neg_idx[start:start + chunk]])
        for start in range(0, n_bootstrap, chunk)
    ]
    return np.concatenate(parts) if parts else np.empty(0)


def bootstrap_auroc_interval(
    labels, scores, n_bootstrap: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile ``1 - alpha`` interval of the AUROC over stratified bootstrap resamples."""
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    aurocs = bootstrap_aurocs(labels, scores, n_bootstrap, seed)
    low, high = np.quantile(aurocs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def paired_auroc_difference(labels, scores_a, scores_b, n_bootstrap: int = 1000, seed: int = 0,
                            alpha: float = 0.05) -> dict:
    """AUROC(a) - AUROC(b) on the same texts, with a paired bootstrap ``1 - alpha`` interval.

    Each resample draws the same texts for both detectors (stratified by class, as in
    ``bootstrap_aurocs``), so the interval reflects how much their difference, not each AUROC,
    moves with the sample. An interval above 0 says a beats b on texts like these.
    """
    labels_a, a = validate_scores(labels, scores_a)
    _, b = validate_scores(labels, scores_b)
    difference = float(roc_auc_score(labels_a, a) - roc_auc_score(labels_a, b))
    if n_bootstrap < 1:
        return {"difference": difference, "low": float("nan"), "high": float("nan"), "n_bootstrap": 0}
    spread = bootstrap_aurocs(labels, a, n_bootstrap, seed) - bootstrap_aurocs(labels, b, n_bootstrap, seed)
    low, high = np.quantile(spread, [alpha / 2.0, 1.0 - alpha / 2.0])
    return {"difference": difference, "low": float(low), "high": float(high), "n_bootstrap": n_bootstrap}


def threshold_for_fpr(nonmember_scores, target_fpr: float) -> float:
    """The lowest threshold at which at most ``target_fpr`` of these non-member scores are >= it.

    Used to calibrate a detector on held-out non-members. If no observed score qualifies
    (e.g. ``target_fpr`` 0, or ties at the top) the threshold is just above the maximum,
    so no given non-member is flagged.
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    values = np.sort(np.asarray(nonmember_scores, dtype=float).ravel())
    if values.size == 0:
        raise DataError("no non-member scores to calibrate a threshold on")
    n_bad = int((~np.isfinite(values)).sum())
    if n_bad:
        raise DataError(f"{n_bad} of {values.size} non-member scores are not finite (NaN or inf)")
    allowed = math.floor(target_fpr * values.size + 1e-9)
    candidates = np.unique(values)
    at_or_above = values.size - np.searchsorted(values, candidates, side="left")
    ok = at_or_above <= allowed
    if ok.any():
        return float(candidates[ok][0])
    return float(np.nextafter(values[-1], np.inf))


def compute_metrics(
    labels, scores, *, n_bootstrap: int = 1000, seed: int = 0,
    fpr_levels=DEFAULT_FPR_LEVELS,
) -> Metrics:
    """All metrics of one score; ``n_bootstrap=0`` skips the interval (NaN bounds)."""
    labels, scores = validate_scores(labels, scores)
    if n_bootstrap > 0:
        low, high = bootstrap_auroc_interval(labels, scores, n_bootstrap, seed)
    else:
        low = high = float("nan")
    balanced, threshold = best_balanced_accuracy(labels, scores)
    return Metrics(
        auroc=float(roc_auc_score(labels, scores)),
        auroc_low=low,
        auroc_high=high,
        tpr_at_fpr={float(level): tpr_at_fpr(labels, scores, level) for level in fpr_levels},
        fpr_at_95_tpr=fpr_at_tpr(labels, scores, 0.95),
        balanced_accuracy=balanced,
        threshold=threshold,
        n_member=int(labels.sum()),
        n_nonmember=int(labels.size - labels.sum()),
    )
