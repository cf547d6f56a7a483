"""The scoring engine on a tiny random model: batching, one pass per text, the cache,
neighbour generation, and scores that point the right way after injection."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import make_tiny_model_dir
from mia_tuner.cache import ScoreCache
from mia_tuner.config import MethodConfig
from mia_tuner.methods import ScoringContext, StatsProvider, build_methods
from mia_tuner.methods.neighbor import (NEIGHBOR_TOPK, causal_lm_neighbors, text_rng,
                                        word_token_mask)
from mia_tuner.metrics import compute_metrics
from mia_tuner.models import load_model
from mia_tuner.scoring import score_methods
from mia_tuner.training.injection import InjectionConfig, continue_pretraining

TEXTS = ["the cat sat on the mat", "a dog ran in the park today", "the bird sang",
         "The quick brown fox jumps over the lazy dog and the capital of France",
         "the mat sat on a cat", "a park ran in the dog"]
REFERENCE_FREE = ["loss", "zlib", "min-k%", "min-k%++"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))))


def test_batching_and_padding_do_not_change_scores(tiny):
    one = StatsProvider(tiny, batch_size=1).get(TEXTS)
    many = StatsProvider(tiny, batch_size=4).get(TEXTS)
    for a, b in zip(one, many):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
        np.testing.assert_allclose(a.mean, b.mean, atol=1e-5)
        np.testing.assert_allclose(a.std, b.std, atol=1e-5)


def test_one_forward_pass_per_text_serves_all_reference_free_methods(tiny, tmp_path):
    provider = StatsProvider(tiny, batch_size=4)
    ctx = ScoringContext(target=provider, settings=MethodConfig())
    cache = ScoreCache(tmp_path / "scores.sqlite")
    methods = build_methods(REFERENCE_FREE, ctx.settings)
    scores, info = score_methods(methods, TEXTS, ctx, cache=cache, model_key=tiny.fingerprint)
    assert provider.n_forward_texts == len(TEXTS)
    assert all(info[m]["computed"] == len(TEXTS) for m in REFERENCE_FREE)
    # The same run again reads every score from the cache and runs nothing.
    fresh = StatsProvider(tiny, batch_size=4)
    ctx2 = ScoringContext(target=fresh, settings=MethodConfig())
    again, info2 = score_methods(build_methods(REFERENCE_FREE, ctx2.settings), TEXTS, ctx2,
                                 cache=cache, model_key=tiny.fingerprint)
    assert fresh.n_forward_texts == 0 and all(info2[m]["cached"] == len(TEXTS) for m in REFERENCE_FREE)
    for name in REFERENCE_FREE:
        np.testing.assert_allclose(again[name], scores[name])
    # Adding a method and a text computes only those.
    more = TEXTS + ["a brand new text here"]
    _, info3 = score_methods(build_methods(["loss", "lowercase"], ctx2.settings), more, ctx2,
                             cache=cache, model_key=tiny.fingerprint)
    assert info3["loss"]["computed"] == 1 and info3["lowercase"]["computed"] == len(more)
    # A different k is a different setting, hence a cache miss.
    _, info4 = score_methods(build_methods(["min-k%"], MethodConfig(k=0.5)), TEXTS, ctx2,
                             cache=cache, model_key=tiny.fingerprint)
    assert info4["min-k%"]["computed"] == len(TEXTS)
    cache.close()


def test_loss_score_is_the_mean_token_log_likelihood(tiny):
    import torch

    text = TEXTS[1]
    ids = torch.tensor([tiny.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        nll = tiny.model(input_ids=ids, labels=ids).loss.item()
    ctx = ScoringContext(target=StatsProvider(tiny), settings=MethodConfig())
    assert build_methods(["loss"], ctx.settings)[0].score([text], ctx)[0] == pytest.approx(-nll, abs=1e-5)


def test_truncation_is_counted(tiny):
    provider = StatsProvider(tiny, max_tokens=4)
    stats = provider.get([TEXTS[3]])[0]
    assert len(stats.token_ids) == 4 and stats.truncated and provider.n_truncated == 1


def test_causal_lm_neighbours_replace_words_deterministically(tiny):
    # A random model's top-20 rarely holds a whole word: let every token be a candidate.
    provider = StatsProvider(tiny, topk=len(tiny.tokenizer))
    stats = provider.get([TEXTS[3]])[0]
    mask = word_token_mask(tiny.tokenizer)
    make = lambda: causal_lm_neighbors(stats, tiny.tokenizer, mask, n=3, fraction=0.3,
                                       rng=text_rng(0, TEXTS[3]))
    first = make()
    assert first == make() and len(first) == 3
    original = TEXTS[3].split()
    for neighbour in first:
        words = neighbour.split()
        assert len(words) == len(original)
        assert 1 <= sum(a != b for a, b in zip(words, original)) <= 4


def test_neighbor_method_runs_on_generated_neighbours(tiny):
    provider = StatsProvider(tiny, topk=NEIGHBOR_TOPK)
    ctx = ScoringContext(target=provider, settings=MethodConfig(num_neighbors=2))
    scores = build_methods(["neighbor"], ctx.settings)[0].score(TEXTS[:4], ctx)
    assert scores.shape == (4,) and np.isfinite(scores).all()


def test_injected_members_score_higher(tmp_path):
    """Orientation end to end: train the tiny model on 'members'; every method must rank them
    above unseen 'non-members'."""
    loaded = load_model(str(make_tiny_model_dir(tmp_path / "m")))
    members, nonmembers = TEXTS[:3], ["seven dogs sat in a park", "ten birds ran on the mat",
                                      "a cat sang one two three"]
    continue_pretraining(loaded.model, loaded.tokenizer, members,
                         InjectionConfig(epochs=40, learning_rate=3e-3, batch_size=3))
    ctx = ScoringContext(target=StatsProvider(loaded), settings=MethodConfig(k=0.5))
    labels = np.array([1, 1, 1, 0, 0, 0])
    for method in build_methods(REFERENCE_FREE, ctx.settings):
        auroc = compute_metrics(labels, method.score(members + nonmembers, ctx), n_bootstrap=0).auroc
        assert auroc == 1.0, method.name


def test_light_likelihood_pass_agrees_with_the_full_statistics(tiny):
    light = StatsProvider(tiny, batch_size=4).mean_logprobs(TEXTS)
    full = [s.mean_logprob for s in StatsProvider(tiny, batch_size=4).get(TEXTS)]
    np.testing.assert_allclose(light, full, atol=1e-5)
    provider = StatsProvider(tiny)
    provider.get(TEXTS[:2])
    provider.mean_logprobs(TEXTS[:3])  # two are known already: one new text is run
    assert provider.n_forward_texts == 3
