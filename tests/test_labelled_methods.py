"""Detectors that use the labelled training part: ReCaLL, Con-ReCall, `fused`; and the paired
bootstrap that compares two detectors on the same texts. Checked against hand computations on
the tiny random model (a full, uncached forward of prefix + text is the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mia_tuner.config import MethodConfig
from mia_tuner.methods import METHODS, ScoringContext, StatsProvider, build_methods
from mia_tuner.methods.fused import Fused, FusedRef
from mia_tuner.methods.recall import SHOT_SEPARATOR, PrefixedLikelihood, choose_shots, prefix_shots
from mia_tuner.metrics import paired_auroc_difference
from mia_tuner.models import load_model

TEXTS = ["The cat sat on the mat.", "A bird flew over the park near the river today, slowly.",
         "Dogs bark.", "Paris is the capital of France and Berlin of Germany."]


def train_part(n: int = 12):
    texts, labels = [], []
    for i in range(n):
        texts += [f"Member number {i} is a cat on a mat.", f"Non-member {i} is a bird in a park."]
        labels += [1, 0]
    return tuple(texts), tuple(labels)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def context(loaded, **settings) -> ScoringContext:
    texts, labels = train_part()
    config = MethodConfig(**{"recall_shots": 2, "batch_size": 2, **settings})
    return ScoringContext(target=StatsProvider(loaded, batch_size=2, topk=20), settings=config,
                          train_texts=texts, train_labels=labels, seed=7)


def full_forward_mean_logprob(loaded, prefix_text: str, text: str, skip_first: bool) -> float:
    """The reference: one uncached forward of prefix ids + text ids."""
    tok = loaded.tokenizer
    prefix = tok(prefix_text, add_special_tokens=True)["input_ids"]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([prefix + ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    token_lp = [float(logprobs[len(prefix) - 1 + i, t]) for i, t in enumerate(ids)]
    return float(np.mean(token_lp[int(skip_first):]))


def test_prefix_cache_gives_the_full_forward(loaded):
    prefix_text = SHOT_SEPARATOR.join(["one shot text", "another shot, longer than the first"]) + SHOT_SEPARATOR
    scorer = PrefixedLikelihood(loaded, prefix_text, batch_size=3, max_tokens=128)
    got = scorer.mean_logprobs(TEXTS)
    expected = [full_forward_mean_logprob(loaded, prefix_text, t, scorer.skip_first) for t in TEXTS]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scorer.mean_logprobs(TEXTS[::-1]), expected[::-1], rtol=1e-5, atol=1e-5)


def test_shots_come_from_the_training_part_by_seed(loaded):
    ctx = context(loaded)
    shots = prefix_shots(ctx)
    texts, labels = train_part()
    assert len(shots[0]) == len(shots[1]) == 2
    assert {texts.index(t) % 2 for t in shots[1]} == {0} and {texts.index(t) % 2 for t in shots[0]} == {1}
    assert prefix_shots(ctx) == shots
    other = context(loaded)
    other.seed = 8
    assert prefix_shots(other) != shots
    # the tiny model's context is 128 tokens: a prefix may take half, so 6 shots are cut to fit
    many = prefix_shots(context(loaded, recall_shots=6))
    assert 1 <= len(many[0]) < 6 and many[0] == choose_shots(context(loaded, recall_shots=6), 0)[:len(many[0])]
    assert len(loaded.tokenizer(SHOT_SEPARATOR.join(many[0]) + SHOT_SEPARATOR)["input_ids"]) <= 64


def test_recall_and_con_recall_by_hand(loaded):
    ctx = context(loaded, con_recall_gamma=0.3)
    shots = prefix_shots(ctx)
    uncond = ctx.target.mean_logprobs(TEXTS)
    skip = PrefixedLikelihood(loaded, "x", 2, 128).skip_first

    def conditional(label):
        prefix = SHOT_SEPARATOR.join(shots[label]) + SHOT_SEPARATOR
        return np.array([full_forward_mean_logprob(loaded, prefix, t, skip) for t in TEXTS])

    non, mem = conditional(0), conditional(1)
    recall, con = build_methods(["recall", "con-recall"], ctx.settings)
    np.testing.assert_allclose(recall.score(TEXTS, ctx), non / uncond, rtol=1e-5)  # NLL ratio
    np.testing.assert_allclose(con.score(TEXTS, ctx), (non - 0.3 * mem) / uncond, rtol=1e-5)
    assert recall.higher_is_member and con.higher_is_member and recall.uses_labels


def test_fused_is_a_cross_validated_logistic_regression_on_the_other_scores(loaded):
    ctx = context(loaded)
    fused = Fused(ctx.settings)
    names = [m.label for m in fused.base_methods()]
    assert "ref" not in names and {"loss", "zlib", "lowercase", "neighbor", "recall", "con-recall"} <= set(names)
    assert {"min-k% (k=0.1)", "min-k%++ (k=0.5)"} <= set(names)
    texts, labels = fused.training_texts(ctx)
    shots = {t for group in prefix_shots(ctx).values() for t in group}
    assert len(texts) == 24 - 4 and not shots & set(texts)
    features = np.column_stack([m.score(texts, ctx) for m in fused.base_methods()])
    expected_model = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=np.logspace(-3, 3, 13), cv=5, scoring="roc_auc", max_iter=5000)).fit(features, labels)
    test_features = np.column_stack([m.score(TEXTS, ctx) for m in fused.base_methods()])
    expected = expected_model.predict_proba(test_features)[:, 1]
    np.testing.assert_allclose(fused.score(TEXTS, ctx), expected, rtol=1e-9)
    assert "ref" in [m.name for m in FusedRef(ctx.settings).base_methods()] and FusedRef.needs_reference


def test_all_without_reference_leaves_out_every_method_that_needs_one():
    from mia_tuner.config import RunConfig
    from mia_tuner.run import select_methods

    names = [m.name for m in select_methods(RunConfig())]
    assert "ref" not in names and "fused+ref" not in names
    assert {"recall", "con-recall", "fused", "blind"} <= set(names)
    assert {"ez", "ref-min-k%", "ref-min-k%++"}.isdisjoint(names)
    assert [name for name, cls in METHODS.items() if cls.needs_reference] == \
        ["ref", "ez", "ref-min-k%", "ref-min-k%++", "fused+ref"]


# ---------------------------------------------------------------- paired bootstrap


def test_paired_auroc_difference_by_hand():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(30), np.zeros(30)]
    a = labels + rng.normal(0, 1.0, 60)
    b = labels + rng.normal(0, 2.0, 60)
    result = paired_auroc_difference(labels, a, b, n_bootstrap=300, seed=3)
    assert result["difference"] == pytest.approx(roc_auc_score(labels, a) - roc_auc_score(labels, b))
    # the same resampled texts for both detectors, by a slow loop
    boot = np.random.default_rng(3)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    pos_idx, neg_idx = boot.integers(0, 30, (300, 30)), boot.integers(0, 30, (300, 30))
    diffs = []
    for p, n in zip(pos_idx, neg_idx):
        rows = np.r_[pos[p], neg[n]]
        y = np.r_[np.ones(30), np.zeros(30)]
        diffs.append(roc_auc_score(y, a[rows]) - roc_auc_score(y, b[rows]))
    low, high = np.quantile(diffs, [0.025, 0.975])
    assert (result["low"], result["high"]) == pytest.approx((low, high))
    same = paired_auroc_difference(labels, a, a, n_bootstrap=100)
    assert same["difference"] == same["low"] == same["high"] == 0.0


def test_fused_features_must_name_fusable_methods():
    from mia_tuner.config import MethodConfig
    from mia_tuner.errors import MethodError
    from mia_tuner.methods import build_methods

    with pytest.raises(MethodError, match="fused_features names blind"):
        build_methods(["fused"], MethodConfig(fused_features=["loss", "blind"]))
    fused = build_methods(["fused"], MethodConfig(fused_features=["loss", "min-k%"]))[0]
    assert [m.label for m in fused.base_methods()][0] == "loss" and not fused.needs_topk
