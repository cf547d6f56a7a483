"""Every score-based method against a hand computation, on a tiny random model."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from mia_tuner.config import MethodConfig
from mia_tuner.errors import MethodError
from mia_tuner.methods import METHODS, Method, ScoringContext, build_methods
from mia_tuner.methods.base import register
from mia_tuner.methods.neighbor import (read_neighbors_file)
from mia_tuner.methods.reference_free import lowest_k_mean, zlib_length
from mia_tuner.methods.token_stats import TokenStats, stats_from_logits

TEXTS = ["the cat sat on the mat", "a dog ran in the park today",
         "the bird sang", "one two three four five six seven eight nine ten"]


def hand_stats(logits: np.ndarray, ids: np.ndarray):
    """log p, mu, sigma computed with plain numpy, one position at a time."""
    logp, mu, sigma = [], [], []
    for t in range(len(ids) - 1):
        z = logits[t] - logits[t].max()
        log_probs = z - math.log(np.exp(z).sum())
        probs = np.exp(log_probs)
        logp.append(log_probs[ids[t + 1]])
        mean = float((probs * log_probs).sum())
        mu.append(mean)
        sigma.append(math.sqrt(float((probs * (log_probs - mean) ** 2).sum())))
    return np.array(logp), np.array(mu), np.array(sigma)


def test_stats_from_known_logits_match_hand_computation():
    logits = np.array([[0.0, math.log(2), math.log(3), 0.0],
                       [1.0, 1.0, 1.0, 1.0],
                       [5.0, -1.0, 0.5, 2.0]])
    ids = np.array([0, 2, 3])
    stats = stats_from_logits(torch.tensor(logits), torch.tensor(ids), topk=2)
    logp, mu, sigma = hand_stats(logits, ids)
    # First position: p = [1, 2, 3, 1] / 7, the next token is 2 -> log(3/7).
    assert stats.logprobs[0] == pytest.approx(math.log(3 / 7))
    np.testing.assert_allclose(stats.logprobs, logp, atol=1e-6)
    np.testing.assert_allclose(stats.mean, mu, atol=1e-6)
    np.testing.assert_allclose(stats.std, sigma, atol=1e-6)
    # Uniform distribution over 4 tokens: mu = log(1/4), sigma = 0.
    assert stats.mean[1] == pytest.approx(math.log(0.25))
    assert stats.std[1] == pytest.approx(0.0, abs=1e-3)
    assert stats.topk[0].tolist() == [2, 1]


def fixed_stats(logprobs, mean=None, std=None) -> TokenStats:
    logprobs = np.asarray(logprobs, dtype=float)
    return TokenStats(token_ids=np.arange(len(logprobs) + 1), logprobs=logprobs,
                      mean=np.zeros_like(logprobs) if mean is None else np.asarray(mean, float),
                      std=np.ones_like(logprobs) if std is None else np.asarray(std, float))


class FixedProvider:
    """A StatsProvider stand-in that returns given statistics."""

    def __init__(self, table: dict[str, TokenStats]):
        self.table, self.max_tokens = table, 64

    def get(self, texts):
        return [self.table[t] for t in texts]

    def mean_logprobs(self, texts):
        return np.array([s.mean_logprob for s in self.get(texts)])

    def seen_texts(self, texts):  # nothing is truncated here
        return list(texts)


def scores_of(name: str, table: dict, texts, **settings):
    ctx = ScoringContext(target=FixedProvider(table), settings=MethodConfig(**settings))
    return build_methods([name], ctx.settings)[0].score(texts, ctx)


def test_loss_zlib_mink_minkpp_by_hand():
    text = "hello hello hello world"
    stats = fixed_stats([-1.0, -4.0, -2.0, -3.0, -0.5], mean=[-1, -1, -1, -1, -1],
                        std=[1, 2, 1, 1, 0.5])
    table = {text: stats}
    mean_ll = (-1 - 4 - 2 - 3 - 0.5) / 5
    assert scores_of("loss", table, [text])[0] == pytest.approx(mean_ll)
    assert scores_of("zlib", table, [text])[0] == pytest.approx(
        mean_ll / len(zlib.compress(text.encode())))
    # k = 0.4 of 5 tokens -> the 2 lowest log-probs: -4 and -3.
    assert scores_of("min-k%", table, [text], k=0.4)[0] == pytest.approx(-3.5)
    # standardised: (0, -1.5, -1, -2, 1) -> the 2 lowest: -2, -1.5.
    assert scores_of("min-k%++", table, [text], k=0.4)[0] == pytest.approx(-1.75)
    # k small enough to round to zero tokens still takes the lowest one.
    assert scores_of("min-k%", table, [text], k=0.01)[0] == pytest.approx(-4.0)


def test_lowercase_and_ref_by_hand():
    text, lower = "Hello World", "hello world"
    table = {text: fixed_stats([-1.0, -3.0]), lower: fixed_stats([-4.0, -4.0])}
    # NLL(lower) / NLL(text) = 4 / 2
    assert scores_of("lowercase", table, [text])[0] == pytest.approx(2.0)

    class FakeRef(FixedProvider):
        loaded = type("L", (), {"fingerprint": "ref"})()

    ctx = ScoringContext(target=FixedProvider(table), settings=MethodConfig(),
                         reference=FakeRef({text: fixed_stats([-5.0, -5.0])}))
    ref = build_methods(["ref"], ctx.settings)[0]
    # NLL target 2, NLL reference 5 -> raw 2 - 5 = -3, oriented score +3.
    assert ref.score([text], ctx)[0] == pytest.approx(3.0)


def test_helpers():
    assert lowest_k_mean(np.array([3.0, 1.0, 2.0, 0.0]), 0.5) == pytest.approx(0.5)
    assert zlib_length("aaaa") == len(zlib.compress(b"aaaa"))
    with pytest.raises(ValueError):
        build_methods(["min-k%"], MethodConfig(k=0.0))


def test_orientation_is_applied_in_one_place():
    class Lower(Method):
        name, higher_is_member = "test-lower", False

        def raw_statistic(self, texts, ctx):
            return np.array([1.0, 2.0])

    ctx = ScoringContext(target=None)
    assert Lower(MethodConfig()).score(["a", "b"], ctx).tolist() == [-1.0, -2.0]
    with pytest.raises(MethodError):
        register(type("NoOrientation", (Lower,), {"name": "x", "higher_is_member": None}))
    assert all(isinstance(cls.higher_is_member, bool) for cls in METHODS.values())


def test_non_finite_scores_are_refused():
    class Broken(Method):
        name, higher_is_member = "test-broken", True

        def raw_statistic(self, texts, ctx):
            return np.array([np.nan])

    with pytest.raises(MethodError, match="non-finite"):
        Broken(MethodConfig()).score(["a"], ScoringContext(target=None))


def test_unknown_method_lists_available():
    with pytest.raises(MethodError, match="available"):
        build_methods(["nope"], MethodConfig())
    names = [m.name for m in build_methods(["all"], MethodConfig())]
    assert set(names) == {"loss", "zlib", "lowercase", "ref", "ez", "ref-min-k%", "ref-min-k%++", "min-k%",
                          "min-k%++", "neighbor", "recall", "con-recall", "fsd", "blind", "fused", "fused+ref"}


def test_k_sweep_adds_labelled_rows():
    methods = build_methods(["min-k%"], MethodConfig(k=0.2, k_sweep=[0.1, 0.2, 0.5]))
    assert [m.label for m in methods] == ["min-k%", "min-k% (k=0.1)", "min-k% (k=0.5)"]


def test_neighbor_score_by_hand(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"text": "a b", "neighbors": ["c d", "e f"]}\n')
    table = {"a b": fixed_stats([-1.0]), "c d": fixed_stats([-2.0]), "e f": fixed_stats([-4.0])}
    # NLL(text) - mean NLL(neighbours) = 1 - 3 = -2 -> oriented +2.
    assert scores_of("neighbor", table, ["a b"], neighbors_file=str(path))[0] == pytest.approx(2.0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a b"}\n')
    with pytest.raises(MethodError, match="expected"):
        read_neighbors_file(str(bad))
    with pytest.raises(MethodError, match="no neighbours"):
        scores_of("neighbor", table, ["c d"], neighbors_file=str(path))


def test_blind_learns_a_keyword_and_needs_both_classes():
    train = ["event in 2024 happened"] * 5 + ["event in 2015 happened"] * 5
    labels = [0] * 5 + [1] * 5
    ctx = ScoringContext(target=None, train_texts=tuple(train), train_labels=tuple(labels))
    blind = build_methods(["blind"], MethodConfig())[0]
    member, nonmember = blind.score(["it was 2015", "it was 2024"], ctx)
    assert member > nonmember
    with pytest.raises(MethodError):
        blind.score(["x"], ScoringContext(target=None, train_texts=("a",), train_labels=(1,)))
