"""Safeguards: the defended model, the defensive objective, the artefact, utility, `defend`.

Tiny random Llamas (tests/helpers.py): the numbers say nothing about how well a defence works;
the tests check hand computations, that a defence applies and comes off exactly, that saved
defences load to identical outputs and refuse other models or damaged files, and the command.
The offline SmolLM2 test (marked integration) checks that the defensive loss falls.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import make_tiny_model, tiny_loaded, write_jsonl

from mia_tuner.cli import main
from mia_tuner.data.types import MembershipSet
from mia_tuner.errors import ArtefactError, DataError, MethodError, ModelError
from mia_tuner.models.kv_cache import returned_cache
from mia_tuner.safeguards import mmlu
from mia_tuner.safeguards.api import disjoint_parts
from mia_tuner.suite import defend
from mia_tuner.safeguards.artefact import apply_defence, read_defence_info, save_defence, text_sha256
from mia_tuner.safeguards.config import DefenceConfig
from mia_tuner.safeguards.defended import DefendedModel, defended, remove_defence
from mia_tuner.safeguards.objective import DefencePipeline
from mia_tuner.safeguards.train import train_defence, trainable_defence, training_settings
from mia_tuner.safeguards.utility import (general_text, greedy_agreement, greedy_answer, measure_utility,
                                          ordinary_prompts, perplexity_and_kl)
from mia_tuner.config import MethodConfig, SplitConfig
from mia_tuner.integrity import content_sha256
from mia_tuner.training import chunked
from mia_tuner.training.losses import chance_contrastive_loss_for
from mia_tuner.tuner.config import TunerConfig
from mia_tuner.tuner.peft_setup import forward_logits, shared_prefix_logits, wrap_model

IDS = torch.tensor([[0, 5, 6, 7, 8, 9], [0, 9, 10, 11, 3, 3]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


def random_prompt(loaded, n: int = 3, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(n, loaded.model.config.hidden_size) * 0.5


def toy_set(n: int) -> MembershipSet:
    texts, labels = [], []
    for i in range(n):
        texts += [f"The cat number {i} sat on the mat.", f"A bird called {i} flew over the park."]
        labels += [1, 0]
    return MembershipSet(tuple(texts), tuple(labels), name="toy")


# ------------------------------------------------------------------ the defended model


def test_defended_logits_are_the_models_logits_after_the_prompt():
    loaded = tiny_loaded(chat=False)
    prompt = random_prompt(loaded)
    model = defended(loaded, prompt, "fp").model
    embeds = torch.cat([prompt.unsqueeze(0).expand(2, -1, -1), loaded.model.get_input_embeddings()(IDS)], 1)
    mask = torch.cat([torch.ones(2, 3, dtype=torch.long), MASK], 1)
    expected = loaded.model(inputs_embeds=embeds, attention_mask=mask).logits[:, 3:]
    got = model(input_ids=IDS, attention_mask=MASK).logits
    assert got.shape == (2, 6, loaded.model.config.vocab_size)
    torch.testing.assert_close(got, expected)


def test_applying_a_defence_changes_outputs_and_removing_it_restores_them_exactly():
    loaded = tiny_loaded(chat=False)
    before = loaded.model(input_ids=IDS, attention_mask=MASK).logits
    protected = defended(loaded, random_prompt(loaded), "base+defence")
    after = protected.model(input_ids=IDS, attention_mask=MASK).logits
    assert (after - before).abs().max() > 1e-3
    assert protected.max_tokens == loaded.max_tokens - 3  # the prompt's positions leave the budget
    restored = remove_defence(protected, loaded.fingerprint)
    assert restored.model is loaded.model and restored.fingerprint == loaded.fingerprint
    assert torch.equal(restored.model(input_ids=IDS, attention_mask=MASK).logits, before)
    with pytest.raises(ValueError, match="no defensive prompt"):
        remove_defence(restored, loaded.fingerprint)


def test_a_cache_made_by_the_defended_model_holds_the_prompt_once():
    """ReCaLL's path: a prefix pass returns a cache, the text pass continues from it."""
    loaded = tiny_loaded(chat=False)
    model = defended(loaded, random_prompt(loaded), "fp").model
    ids = IDS[:1]
    full = model(input_ids=ids).logits
    prefix = model(input_ids=ids[:, :2], use_cache=True)
    rest = model(input_ids=ids[:, 2:], attention_mask=torch.ones(1, 6, dtype=torch.long),
                 past_key_values=returned_cache(prefix)).logits
    torch.testing.assert_close(rest, full[:, 2:], rtol=1e-5, atol=1e-5)


def test_an_attackers_soft_prompt_trains_on_top_of_the_defended_model():
    """MIA-Tuner against a defended model: peft on top; the shared-prefix pass agrees."""
    loaded = tiny_loaded(chat=True)
    model = defended(loaded, random_prompt(loaded), "fp").model
    attacker = wrap_model(model, loaded.tokenizer, TunerConfig(num_virtual_tokens=4))
    trainable = [n for n, p in attacker.named_parameters() if p.requires_grad]
    assert trainable == ["prompt_encoder.default.embedding.weight"]
    ids = torch.tensor([[0, 5, 6, 7, 8], [0, 5, 6, 9, 10]])
    mask = torch.ones_like(ids)
    torch.testing.assert_close(shared_prefix_logits(attacker, ids, mask), forward_logits(attacker, ids, mask),
                               rtol=1e-5, atol=1e-5)


def test_a_prompt_of_the_wrong_width_is_refused():
    loaded = tiny_loaded(chat=False)
    with pytest.raises(ValueError, match="shape"):
        DefendedModel(loaded.model, torch.zeros(3, 7))


# ------------------------------------------------------------------ the objective


def test_token_kl_matches_the_full_computation_and_its_gradient():
    torch.manual_seed(0)
    loaded = tiny_loaded(chat=False)
    head = chunked.OutputHead(loaded.model)
    hidden = torch.randn(2, 7, 32, requires_grad=True)
    reference = torch.randn(2, 7, 32)
    got = chunked.token_kl(hidden, reference, head, chunk=3)
    log_p = F.log_softmax(head.logits(reference), -1)
    log_q = F.log_softmax(head.logits(hidden), -1)
    expected = (log_p.exp() * (log_p - log_q)).sum(-1)
    torch.testing.assert_close(got, expected)
    (grad_got,) = torch.autograd.grad(got.sum(), hidden)
    (grad_expected,) = torch.autograd.grad(expected.sum(), hidden)
    torch.testing.assert_close(grad_got, grad_expected)
    assert float(chunked.token_kl(reference, reference, head).detach().abs().max()) < 1e-6
    # a reference with an output layer of its own (another model over the same vocabulary)
    head_other = chunked.OutputHead(tiny_loaded(chat=False, seed=1).model)
    got = chunked.token_kl(hidden, reference, head, chunk=3, head_reference=head_other)
    log_p = F.log_softmax(head_other.logits(reference), -1)
    torch.testing.assert_close(got, (log_p.exp() * (log_p - log_q)).sum(-1))


def test_token_kl_against_a_reference_of_another_width():
    """A reference model with its own head may have another hidden size; with one shared head
    the hidden states must have one shape."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    loaded = tiny_loaded(chat=False)
    narrow = LlamaForCausalLM(LlamaConfig(vocab_size=len(loaded.tokenizer), hidden_size=16, intermediate_size=32,
                                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    head, head_narrow = chunked.OutputHead(loaded.model), chunked.OutputHead(narrow)
    hidden, reference = torch.randn(2, 5, 32), torch.randn(2, 5, 16)
    got = chunked.token_kl(hidden, reference, head, head_reference=head_narrow)
    log_p = F.log_softmax(head_narrow.logits(reference), -1)
    log_q = F.log_softmax(head.logits(hidden), -1)
    torch.testing.assert_close(got, (log_p.exp() * (log_p - log_q)).sum(-1))
    with pytest.raises(ValueError, match="differ"):
        chunked.token_kl(hidden, reference, head)
    with pytest.raises(ValueError, match="differ"):
        chunked.token_kl(hidden, torch.randn(2, 4, 16), head, head_reference=head_narrow)


def contrastive_by_hand(z, member, tau, d) -> float:
    n = len(z)
    total = 0.0
    for i in range(n):
        sims = {j: math.exp(math.exp(-abs(z[i] - z[j]) / d) / tau) for j in range(n) if j != i}
        same = sum(v for j, v in sims.items() if member[j] == member[i])
        total += -math.log(same / sum(sims.values()))
    return total / n


@pytest.mark.parametrize("member", [[1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 1, 0]])
def test_defence_loss_of_a_batch_by_hand(member):
    """The pipeline's loss without anchor: |L_ctr(ℓ) − L_chance| on the texts' own ℓ(x)."""
    loaded = tiny_loaded(chat=False)
    texts = [f"The cat number {i} sat on the mat." for i in range(len(member))]
    config = DefenceConfig(anchor_weight=0.0, distance_scale=2.0)
    pipeline = DefencePipeline(loaded.tokenizer, config)
    batch = pipeline.encode(texts, member)
    model = defended(loaded, random_prompt(loaded), "fp").model
    total, parts = pipeline.loss(model, batch)
    z = [float(-s) for s in pipeline.score(model, texts)]  # −ℓ(x) per text, the same ℓ
    expected = abs(contrastive_by_hand(z, member, 1.0, 2.0) - chance_contrastive_loss_for(torch.tensor(member)))
    assert float(total) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert parts["defence"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("chat", [True, False])
def test_against_mia_tuner_adds_the_answer_term_only_where_a_question_is_asked(chat):
    """A chat model is attacked through its Yes/No answer; a base model (no chat template, where
    MIA-Tuner runs its base pipeline on per-text losses) gets the loss term alone, the same
    value as the defence against score-based attacks."""
    loaded = tiny_loaded(chat=chat)
    texts, member = [f"The cat number {i} sat on the mat." for i in range(4)], [1, 1, 0, 0]
    model = defended(loaded, random_prompt(loaded), "fp").model
    results = {}
    for against in ("scores", "mia-tuner"):
        pipeline = DefencePipeline(loaded.tokenizer, DefenceConfig(against=against, anchor_weight=0.0))
        results[against] = pipeline.loss(model, pipeline.encode(texts, member))
    (scores_total, _), (tuner_total, tuner_parts) = results["scores"], results["mia-tuner"]
    assert ("answer" in tuner_parts) == chat
    if chat:
        assert float(tuner_total) == pytest.approx(float(scores_total) + tuner_parts["answer"], rel=1e-5)
    else:
        assert float(tuner_total) == pytest.approx(float(scores_total), rel=1e-6)


def test_anchor_is_the_mean_kl_over_non_member_positions():
    loaded = tiny_loaded(chat=False)
    texts = ["The cat sat.", "A bird flew over the park near the river.", "Dogs bark.", "Fish swim here."]
    member = [1, 0, 1, 0]
    pipeline = DefencePipeline(loaded.tokenizer, DefenceConfig(defence_weight=0.0, anchor_weight=1.0))
    batch = pipeline.encode(texts, member)
    model = defended(loaded, random_prompt(loaded), "fp").model
    total, parts = pipeline.loss(model, batch)
    nonmembers = [t for t, y in zip(texts, member) if not y]
    assert float(total) == pytest.approx(mean_kl_by_hand(model, loaded, nonmembers), rel=1e-4)


def mean_kl_by_hand(model, loaded, texts) -> float:
    """KL(original ‖ defended) summed over every next-token position of ``texts``, over their number."""
    kls, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
            log_q = F.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
            log_p = F.log_softmax(loaded.model(input_ids=ids).logits[0, :-1], -1)
            kls += float((log_p.exp() * (log_p - log_q)).sum())
            count += ids.shape[1] - 1
    return kls / count


def test_validation_kl_is_the_mean_kl_over_every_position_by_hand():
    """Texts of different lengths in batches of 2: a mean over positions, not over texts."""
    loaded = tiny_loaded(chat=False)
    texts = ["The cat sat.", "A bird flew over the park near the river.", "Dogs bark loudly at night."]
    pipeline = DefencePipeline(loaded.tokenizer, DefenceConfig(batch_size=2))
    model = defended(loaded, random_prompt(loaded), "fp").model
    model.train()
    assert pipeline.mean_kl(model, texts) == pytest.approx(mean_kl_by_hand(model, loaded, texts), rel=1e-4)
    assert model.training  # the mode it was in
    fresh = tiny_loaded(chat=False)
    untrained_lora = trainable_defence(fresh, DefenceConfig(peft="lora"))  # the identity at the start
    assert pipeline.mean_kl(untrained_lora, texts) == pytest.approx(0.0, abs=1e-6)


def per_text_nll(model, tokenizer, text) -> float:
    """ℓ(x) by hand: mean NLL of the text's tokens after the first."""
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    return float(F.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:]))


def loss_after_steps(pipeline, model, batch, steps: int, lr: float) -> torch.Tensor:
    """The pipeline's loss of ``batch`` after ``steps`` Adam steps on it."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss, _ = pipeline.loss(model, batch)
        loss.backward()
        optimizer.step()
    return pipeline.loss(model, batch)[0]


def test_member_shift_is_the_members_mean_advantage_by_hand():
    loaded = tiny_loaded(chat=False)
    data = toy_set(3)
    pipeline = DefencePipeline(loaded.tokenizer, DefenceConfig(member_term="shift", batch_size=4))
    delta = pipeline.measure_member_shift(defended(loaded, random_prompt(loaded), "fp").model, data)
    nll = [per_text_nll(loaded.model, loaded.tokenizer, t) for t in data.texts]  # the undefended model
    members = [v for v, y in zip(nll, data.labels) if y]
    nonmembers = [v for v, y in zip(nll, data.labels) if not y]
    assert delta == pytest.approx(np.mean(nonmembers) - np.mean(members), rel=1e-4)


@pytest.mark.parametrize("member", [[1, 1, 0, 0], [1, 0, 0, 0, 1, 1]])
def test_shift_term_of_a_batch_by_hand(member):
    """member_term="shift": the mean over members of |ℓ(x) − ℓ₀(x) − δ| (ℓ defended, ℓ₀ not),
    on texts of different lengths (padded rows)."""
    loaded = tiny_loaded(chat=False)
    texts = [f"The cat number {i} sat" + " on the mat" * i + "." for i in range(len(member))]
    pipeline = DefencePipeline(loaded.tokenizer, DefenceConfig(member_term="shift", anchor_weight=0.0))
    model = defended(loaded, random_prompt(loaded), "fp").model
    pipeline.member_shift = 0.3
    total, parts = pipeline.loss(model, pipeline.encode(texts, member))
    expected = np.mean([abs(per_text_nll(model, loaded.tokenizer, t) - per_text_nll(loaded.model, loaded.tokenizer, t)
                            - 0.3) for t, y in zip(texts, member) if y])
    assert float(total) == pytest.approx(expected, rel=1e-4)
    assert parts["shift"] == pytest.approx(expected, rel=1e-4)


def test_shift_training_raises_members_losses_by_the_measured_gap():
    """A LoRA defence starts as the identity (term = |δ|) and training brings each member's loss
    towards ℓ₀ + δ; the shift needs δ measured first."""
    loaded = tiny_loaded(chat=False)
    config = DefenceConfig(member_term="shift", peft="lora", anchor_weight=0.0)
    model = trainable_defence(loaded, config)
    pipeline = DefencePipeline(loaded.tokenizer, config)
    data = toy_set(4)
    batch = pipeline.encode(list(data.texts), list(data.labels))
    with pytest.raises(RuntimeError, match="measure_member_shift"):
        pipeline.loss(model, batch)
    pipeline.measure_member_shift(model, data)
    pipeline.member_shift = 0.5  # a gap the toy model does not have by itself
    first, _ = pipeline.loss(model, batch)
    assert float(first.detach()) == pytest.approx(0.5, rel=1e-4)
    last = loss_after_steps(pipeline, model, batch, steps=20, lr=0.01)
    assert float(last) < 0.5 * float(first)


def test_a_later_setting_at_its_default_leaves_the_defence_key_as_before():
    """Defences trained before `member_term` existed keep their keys (the hashes of the default
    settings as they were at commit 25c9c3f: the training key's and the suite column's); a
    shift defence differs. A new field must join LATER_DEFAULTS to keep this true."""
    default = DefenceConfig()
    assert content_sha256(training_settings(default)) == (
        "3f0e95ad2ecda25a35378705a2e82e4d6b5b1ef8f4a025655db8b2b147f4ee09")
    assert content_sha256(default.key_dict()) == "030d1df3cac949518c631afa66d50d18d98cdf5ec6502493b34838e6dba2667f"
    assert {**default.key_dict(), "member_term": "contrastive", "selection_max_kl": None} == default.to_dict()
    assert DefenceConfig(member_term="shift").key_dict()["member_term"] == "shift"
    assert DefenceConfig(selection_max_kl=0.05).key_dict()["selection_max_kl"] == 0.05
    with pytest.raises(MethodError, match="member_term"):
        DefenceConfig(member_term="gap")


def test_training_lowers_the_defence_loss_and_only_the_prompt_moves():
    loaded = tiny_loaded(chat=False)
    base = {n: p.clone() for n, p in loaded.model.named_parameters()}
    config = DefenceConfig(epochs=3, learning_rate=0.05, batch_per_class=4, anchor_weight=0.0,
                           distance_scale=0.5)
    model = trainable_defence(loaded, config)
    pipeline = DefencePipeline(loaded.tokenizer, config)
    data = toy_set(4)
    batch = pipeline.encode(list(data.texts), list(data.labels))
    first, _ = pipeline.loss(model, batch)
    last = loss_after_steps(pipeline, model, batch, steps=15, lr=0.05)
    assert float(last) < 0.5 * float(first)
    assert all(torch.equal(p, base[n]) for n, p in loaded.model.named_parameters())


# ------------------------------------------------------------------ the artefact


@pytest.mark.parametrize("peft", ["prompt", "lora"])
def test_save_then_apply_gives_identical_outputs(tmp_path, peft):
    loaded = tiny_loaded(chat=False)
    config = DefenceConfig(peft=peft, epochs=1, batch_per_class=2, validation_per_class=0)
    data = toy_set(4)
    model, history = train_defence(loaded, data, None, config, tmp_path / "d")
    trained = model(input_ids=IDS, attention_mask=MASK).logits.detach()
    if peft == "lora":
        model.unload()
    protected = apply_defence(tmp_path / "d", loaded)
    assert protected.fingerprint != loaded.fingerprint and protected.fingerprint.startswith(loaded.fingerprint)
    got = protected.model(input_ids=IDS, attention_mask=MASK).logits
    if peft == "prompt":
        assert torch.equal(got, trained)
    else:  # merged into the weights: equal up to float rounding
        torch.testing.assert_close(got, trained, rtol=1e-5, atol=1e-5)
    info = read_defence_info(tmp_path / "d")
    assert set(info["trained_on"]) == {text_sha256(t) for t in data.texts}
    assert info["base_model"]["fingerprint"] == loaded.fingerprint and len(history.steps) == 2


def test_a_defence_is_refused_on_another_model_or_when_damaged(tmp_path):
    loaded = tiny_loaded(chat=False)
    save_defence(tmp_path / "d", DefendedModel(loaded.model, random_prompt(loaded)), loaded,
                 DefenceConfig(), trained_on=[toy_set(2)], history={})
    other = tiny_loaded(chat=False, seed=1)
    with pytest.raises(ModelError, match="fingerprint"):
        apply_defence(tmp_path / "d", other)
    (tmp_path / "d" / "defence_prompt.safetensors").write_bytes(b"damaged")
    with pytest.raises(ArtefactError, match="changed or damaged"):
        apply_defence(tmp_path / "d", loaded)
    info = json.loads((tmp_path / "d" / "defence.json").read_text())
    info["against"] = "mia-tuner"
    (tmp_path / "d" / "defence.json").write_text(json.dumps(info))
    with pytest.raises(ArtefactError, match="changed or damaged after it was saved"):
        read_defence_info(tmp_path / "d")
    with pytest.raises(ArtefactError, match="not a defence directory"):
        read_defence_info(tmp_path)


def test_bad_defence_settings_are_refused():
    with pytest.raises(MethodError, match="--against"):
        DefenceConfig(against="everything")
    with pytest.raises(MethodError, match="prompt, lora"):
        DefenceConfig(peft="ia3")
    with pytest.raises(MethodError, match="batch_per_class"):
        DefenceConfig(batch_per_class=1)
    with pytest.raises(MethodError, match="validation_per_class >= 2"):
        DefenceConfig(selection_max_kl=0.05, validation_per_class=1)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(MethodError, match="selection_max_kl"):
            DefenceConfig(selection_max_kl=bad)


# ------------------------------------------------------------------ utility


@pytest.mark.parametrize("against", ["its undefended self", "another model"])
def test_perplexity_and_kl_by_hand(against):
    """Against the model without its defence, and against another model given as ``original``
    (the model before a controlled set's injection: its own weights and output layer)."""
    loaded = tiny_loaded(chat=False)
    if against == "another model":
        original, model = tiny_loaded(chat=False, seed=1).model, loaded.model
        assert not torch.equal(original.get_output_embeddings().weight, model.get_output_embeddings().weight)
    else:
        original, model = None, defended(loaded, random_prompt(loaded), "fp").model
    texts = ["The cat sat on the mat.", "A bird flew over the park near the river today."]
    before, after, kl, n = perplexity_and_kl(model, loaded.tokenizer, texts, batch_size=2, original=original)
    reference = original if original is not None else loaded.model
    nll = {"before": 0.0, "after": 0.0}
    kls, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
        for name, m in (("before", reference), ("after", model)):
            logits = m(input_ids=ids).logits[0, :-1]
            nll[name] += float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        log_p = F.log_softmax(reference(input_ids=ids).logits[0, :-1], -1)
        log_q = F.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        kls += float((log_p.exp() * (log_p - log_q)).sum())
        count += ids.shape[1] - 1
    assert n == count
    assert before == pytest.approx(math.exp(nll["before"] / count), rel=1e-5)
    assert after == pytest.approx(math.exp(nll["after"] / count), rel=1e-5)
    assert kl == pytest.approx(kls / count, rel=1e-4) and kl > 1e-4


def test_models_over_different_vocabularies_are_not_compared():
    loaded = tiny_loaded(chat=False)
    other = make_tiny_model(len(loaded.tokenizer) + 5, seed=1)
    with pytest.raises(ModelError, match="vocabularies differ"):
        perplexity_and_kl(loaded.model, loaded.tokenizer, ["The cat sat."], original=other)


def test_greedy_agreement_is_one_for_a_defence_that_changes_nothing():
    """A fresh LoRA adapter (B = 0) is the identity: every greedy answer agrees."""
    loaded = tiny_loaded(chat=True)
    model = trainable_defence(loaded, DefenceConfig(peft="lora"))
    assert greedy_agreement(model, loaded.tokenizer, ordinary_prompts()[:3]) == 1.0
    utility = measure_utility(model, loaded.tokenizer, texts=general_text()[:2], prompts=ordinary_prompts()[:2])
    assert utility.kl == pytest.approx(0.0, abs=1e-6) and utility.ppl_change == pytest.approx(0.0, abs=1e-5)
    assert utility.greedy_agreement == 1.0 and utility.n_prompts == 2


def test_greedy_agreement_with_another_model():
    loaded, other = tiny_loaded(chat=True), tiny_loaded(chat=True, seed=1).model
    prompts = ordinary_prompts()[:3]
    same = [greedy_answer(loaded.model, loaded.tokenizer, p) == greedy_answer(other, loaded.tokenizer, p)
            for p in prompts]
    assert not all(same)  # two random models: the answers differ, so `original` must be used
    assert greedy_agreement(loaded.model, loaded.tokenizer, prompts, original=other) == sum(same) / len(prompts)


def test_the_shipped_texts_and_prompts_are_there():
    assert len(general_text()) >= 15 and len(ordinary_prompts()) >= 20


MMLU_ROWS = [["What is 2 + 2?", "3", "4", "5", "22", "B"],
             ["Which is a colour?", "red", "table", "seven", "run", "A"],
             ["The capital of France is", "Berlin", "Madrid", "Paris", "Rome", "C"]]


def write_mmlu(path, rows=MMLU_ROWS):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_mmlu_accuracy_is_the_share_of_argmax_options_by_hand(tmp_path):
    loaded = tiny_loaded(chat=False)
    questions = mmlu.load_questions(str(write_mmlu(tmp_path / "tiny_test.csv")))
    assert [q.answer for q in questions] == [1, 0, 2]
    right = 0
    for q in questions:
        totals = []
        prompt = loaded.tokenizer(f"Question: {q.question}\nAnswer:")["input_ids"]
        for choice in q.choices:
            option = loaded.tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + option])
            logprobs = F.log_softmax(loaded.model(input_ids=ids).logits[0], -1)
            totals.append(sum(float(logprobs[len(prompt) - 1 + i, t]) for i, t in enumerate(option)))
        right += int(np.argmax(totals)) == q.answer
    assert mmlu.accuracy(loaded.model, loaded.tokenizer, questions) == pytest.approx(right / 3)
    assert len(mmlu.load_questions(str(tmp_path))) == 3  # a folder of CSV files


def test_mmlu_rows_in_another_layout_are_refused(tmp_path):
    with pytest.raises(DataError, match="6 fields"):
        mmlu.load_questions(str(write_mmlu(tmp_path / "a.csv", [["q", "a", "b", "A"]])))
    with pytest.raises(DataError, match="A-D"):
        mmlu.load_questions(str(write_mmlu(tmp_path / "b.csv", [["q", "a", "b", "c", "d", "E"]])))


# ------------------------------------------------------------------ defend, end to end


def test_defender_attacker_and_test_texts_are_disjoint():
    data = toy_set(30)
    config = DefenceConfig(train_per_class=8, validation_per_class=3, attack_train_per_class=5)
    defender, validation, attacker = disjoint_parts(data, config)
    assert (defender.n_member, validation.n_member, attacker.n_member) == (8, 3, 5)
    parts = [set(defender.texts), set(validation.texts), set(attacker.texts)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    with pytest.raises(DataError, match="attacker"):
        disjoint_parts(toy_set(6), config)


def test_defend_reports_every_attack_before_and_after_on_held_out_texts(tmp_path):
    loaded = tiny_loaded(chat=True)
    config = DefenceConfig(against="mia-tuner", epochs=1, batch_per_class=2, train_per_class=4,
                           validation_per_class=2, attack_train_per_class=4)
    attack = TunerConfig(epochs=1, batch_per_class=2, validation_per_class=2, num_virtual_tokens=3)
    result = defend(loaded, toy_set(20), config, tmp_path / "out", split_config=SplitConfig(max_test_per_class=5),
                    methods=MethodConfig(methods=["loss", "zlib"]), cache_dir=tmp_path / "cache", attack=attack)
    names = [(r["method"], r["adaptive"]) for r in result.rows]
    assert names == [("loss", False), ("zlib", False), ("mia-tuner", False), ("mia-tuner", True)]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_member"] == 5 and report["defender_texts"] == {"train": 8, "validation": 4}
    assert report["attacker_texts"] == 8
    assert all(0.0 <= r["auroc_after"] <= 1.0 for r in report["rows"])
    assert "Perplexity on general text" in result.table and "greedy answers" in result.table


def test_defend_reports_the_defenders_own_texts_and_the_perfect_defence(tmp_path):
    """Beside the held-out rows: the same attacks on the defender's training texts, and the
    model before injection released. Released as the very model that was attacked, the floor
    is the "before" column again, at no utility cost."""
    from helpers import make_tiny_model_dir
    from mia_tuner.config import ModelConfig
    from mia_tuner.metrics import compute_metrics
    from mia_tuner.run import score_split, select_methods
    from mia_tuner.safeguards.api import defence_split
    from mia_tuner.config import RunConfig
    from mia_tuner.data.split import EvaluationSplit

    loaded = tiny_loaded(chat=False)
    same_weights = make_tiny_model_dir(tmp_path / "before-injection")  # seed 0: tiny_loaded's weights
    config = DefenceConfig(epochs=1, batch_per_class=2, train_per_class=4, validation_per_class=2,
                           attack_train_per_class=4)
    methods = MethodConfig(methods=["loss", "zlib", "ref"], reference=str(same_weights))
    result = defend(loaded, toy_set(20), config, tmp_path / "out", split_config=SplitConfig(max_test_per_class=5),
                    methods=methods, cache_dir=tmp_path / "cache",
                    before_injection=ModelConfig(name=str(same_weights)))
    # the defender's own texts: every attack, before and after, on its 4 + 4 training texts
    _, _, defender, _, attacker = defence_split(toy_set(20), config, SplitConfig(max_test_per_class=5))
    run = RunConfig.compose(ModelConfig(name="tiny"), methods=MethodConfig(methods=["loss"]), cache_dir=tmp_path / "c2")
    own_texts = EvaluationSplit(train=attacker.train, test=defender)
    plain, _, _ = score_split(run, loaded, own_texts, select_methods(run))
    seen = {r["method"]: r for r in result.seen_rows}
    assert list(seen) == ["loss", "zlib", "ref"]
    by_hand = compute_metrics(np.array(defender.labels), plain["loss"]).auroc
    assert seen["loss"]["auroc_before"] == pytest.approx(by_hand)
    # the floor: no `ref` (its reference would be the released model), the same AUROC as before, KL 0
    floor = {r["method"]: r for r in result.floor.rows}
    assert list(floor) == ["loss", "zlib"]
    held_out = {r["method"]: r for r in result.rows}
    for method, row in floor.items():
        assert row["auroc_after"] == pytest.approx(held_out[method]["auroc_before"])
    assert result.floor.utility.kl == pytest.approx(0.0, abs=1e-6)
    assert result.floor.utility.ppl_after == pytest.approx(result.floor.utility.ppl_before)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["seen"]["n_member"] == 4 and len(report["seen"]["rows"]) == 3
    assert report["floor"]["model"] == str(same_weights)
    assert "defender's own texts" in result.table and "perfect defence" in result.table


def test_the_runner_records_every_attack_part_so_a_stopped_defence_rescores_nothing(tmp_path, monkeypatch):
    """The attacks before and after a defence are columns of its cell: each part is recorded as
    it is scored, under the model that scored it. A run stopped after them (its safeguard record
    missing) scores nothing again: the defence is read back finished and every part from its
    records; the attacks on the defended model are keyed by the defence's own hash."""
    import mia_tuner.run as run_module

    loaded = tiny_loaded(chat=False)
    config = DefenceConfig(epochs=1, batch_per_class=2, train_per_class=4, validation_per_class=2,
                           attack_train_per_class=4)
    settings = dict(split_config=SplitConfig(max_test_per_class=5), methods=MethodConfig(methods=["loss", "zlib"]),
                    cache_dir=tmp_path / "cache")
    first = defend(loaded, toy_set(20), config, tmp_path / "out", **settings)
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "cells").glob("*/*.json")]
    parts = sorted((r["part"], r["scored_by"].split("-")[0], r["method"]) for r in records if r["kind"] == "part")
    assert parts == sorted((part, model, method) for part in ("held-out", "seen")
                           for model in ("undefended", "defence") for method in ("loss", "zlib"))
    defence_hash = read_defence_info(tmp_path / "out" / "defence")["sha256"]
    assert {r["scored_by"] for r in records if r["kind"] == "part"} == {"undefended", f"defence-{defence_hash[:12]}"}
    stopped = next(p for p in (tmp_path / "out" / "cells").glob("*/defence*.json"))
    stopped.unlink()  # as if the run had been killed before its last record

    def no_scoring(*args, **kwargs):
        raise AssertionError("an attack was scored again")

    monkeypatch.setattr(run_module, "score_split", no_scoring)
    again = defend(loaded, toy_set(20), config, tmp_path / "out", **settings)
    assert again.rows == first.rows and again.seen_rows == first.seen_rows


def test_a_model_before_injection_given_later_is_not_answered_from_the_first_record(tmp_path):
    """The Python API takes the model before injection from its caller: a second call into the
    same folder that names one reports its floor, not the first call's record without it."""
    from helpers import make_tiny_model_dir
    from mia_tuner.config import ModelConfig

    loaded = tiny_loaded(chat=False)
    before = make_tiny_model_dir(tmp_path / "before-injection", seed=3)
    config = DefenceConfig(epochs=1, batch_per_class=2, train_per_class=4, validation_per_class=2,
                           attack_train_per_class=4)
    settings = dict(split_config=SplitConfig(max_test_per_class=5), methods=MethodConfig(methods=["loss"]),
                    cache_dir=tmp_path / "cache")
    assert defend(loaded, toy_set(20), config, tmp_path / "out", **settings).floor is None
    again = defend(loaded, toy_set(20), config, tmp_path / "out", before_injection=ModelConfig(name=str(before)),
                   **settings)
    assert again.floor is not None and again.floor.model == str(before)


def test_the_floor_drops_the_reference_attacks_only_when_their_reference_is_the_released_model():
    from mia_tuner.config import MethodConfig
    from mia_tuner.methods import build_methods
    from mia_tuner.safeguards.floor import floor_methods

    methods = build_methods(["loss", "ref"], MethodConfig(reference="before"))
    assert [m.name for m in floor_methods(methods, "before", "before")] == ["loss"]
    assert [m.name for m in floor_methods(methods, "another", "before")] == ["loss", "ref"]


def test_cli_defend_on_a_set_that_brings_its_model_before_injection_reports_the_floor(tmp_path, monkeypatch):
    """A named set that brings an injected model and the model before it (as controlled sets
    do): `defend` attacks the injected one and releases the other as the perfect defence."""
    from helpers import make_tiny_model_dir
    from mia_tuner import sets
    from mia_tuner.data import registry

    injected, before = make_tiny_model_dir(tmp_path / "injected"), make_tiny_model_dir(tmp_path / "before", seed=3)
    monkeypatch.setattr(registry, "FAMILIES", dict(registry.FAMILIES))

    @registry.register_set("toyinjected", "toyinjected:<n>")
    def _toy(rest, context):
        return registry.NamedSet(data=toy_set(20), dataset="toy", split=rest, model=str(injected),
                                 reference=str(before))

    assert sets.is_named("toyinjected:1")
    assert main(["defend", "--data", "toyinjected:1", "--cache-dir", str(tmp_path / "cache"), "--methods", "loss",
                 "--epochs", "1", "--defender-per-class", "4", "--validation-per-class", "2",
                 "--attack-train-per-class", "3", "--batch-per-class", "2", "--test-per-class", "5",
                 "--out", str(tmp_path / "def")]) == 0
    report = json.loads((tmp_path / "def" / "report.json").read_text())
    assert report["model"]["name"].endswith("injected") and report["floor"]["model"] == str(before)
    assert [r["method"] for r in report["floor"]["rows"]] == ["loss"]
    assert report["floor"]["utility"]["kl"] > 0  # two different models
    assert [r["method"] for r in report["seen"]["rows"]] == ["loss"] and report["seen"]["n_member"] == 4


def test_cli_defend_then_scores_against_the_defended_model(tmp_path, capsys):
    from helpers import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path / "model")
    other_dir = make_tiny_model_dir(tmp_path / "other", seed=3)
    data = write_jsonl(tmp_path / "set.jsonl",
                       [{"input": t, "label": y} for t, y in zip(toy_set(20).texts, toy_set(20).labels)])
    common = ["--data", str(data), "--cache-dir", str(tmp_path / "cache")]
    assert main(["defend", "--model", str(model_dir), *common, "--methods", "loss", "--epochs", "1",
                 "--defender-per-class", "4", "--validation-per-class", "2", "--attack-train-per-class", "3",
                 "--batch-per-class", "2", "--test-per-class", "5", "--out", str(tmp_path / "def")]) == 0
    out = capsys.readouterr().out
    assert "| loss |" in out and "Defence against scores (prompt)" in out
    for name, extra in (("plain", []), ("defended", ["--defence", str(tmp_path / "def" / "defence")])):
        assert main(["scores", "--model", str(model_dir), *common, "--methods", "loss", *extra,
                     "--out", str(tmp_path / name)]) == 0
    metrics = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("plain", "defended")}
    fingerprints = {name: m["extra"]["model"]["fingerprint"] for name, m in metrics.items()}
    assert fingerprints["defended"].startswith(fingerprints["plain"] + "+defence-")
    plain, protected = (pd.read_csv(tmp_path / name / "scores.csv")["loss"].to_numpy()
                        for name in ("plain", "defended"))
    assert not np.allclose(plain, protected)  # the defended model's own scores, not the cached ones
    assert main(["scores", "--model", str(other_dir), *common, "--methods", "loss",
                 "--defence", str(tmp_path / "def" / "defence"), "--out", str(tmp_path / "run2")]) == 2
    assert "fingerprint" in capsys.readouterr().err


# ------------------------------------------------------------------ the offline SmolLM2

FAMILIAR = ["Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex.",
            "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer",
            "We hold these truths to be self-evident, that all men are created equal,",
            "It was the best of times, it was the worst of times, it was the age of wisdom,"]
SCRAMBLED = ["lantern quietly seven marble over the during yesterday cobalt when whisper ladder",
             "orbit velvet under biscuit clarify nine amber threshold gently spoon mirror",
             "pencil harbour drift ninety sudden the of wardrobe gravel echo tundra",
             "saddle violet among quarry listen forty copper beneath ripple nor cathedral"]


@pytest.mark.integration
def test_the_defensive_loss_falls_on_smollm2_in_a_few_steps():
    """Familiar texts (low loss) as members, scrambled words (high loss) as non-members: the
    contrastive loss starts far below its chance value; a few steps of the defensive prompt
    bring it closer."""
    from mia_tuner.config import ModelConfig
    from mia_tuner.models import load_model, offline

    if offline.status("smollm2-135m-instruct")["state"] != "ready":
        pytest.skip("the offline SmolLM2 is not prepared: run `mia-tuner models fetch`")
    loaded = load_model(ModelConfig(name="smollm2-135m-instruct"))
    config = DefenceConfig(anchor_weight=0.0, num_virtual_tokens=8, learning_rate=2e-2, distance_scale=2.0)
    pipeline = DefencePipeline(loaded.tokenizer, config)
    batch = pipeline.encode(FAMILIAR + SCRAMBLED, [1] * 4 + [0] * 4)
    model = trainable_defence(loaded, config)
    optimizer = torch.optim.Adam([model.prompt], lr=config.learning_rate)
    history = []
    for _ in range(6):
        optimizer.zero_grad()
        loss, parts = pipeline.loss(model, batch)
        loss.backward()
        optimizer.step()
        history.append(parts)
    assert history[0]["member_nll"] < history[0]["nonmember_nll"]  # the premise: members are familiar
    assert history[-1]["defence"] < 0.8 * history[0]["defence"]


def test_cli_train_and_detect_against_a_defended_model(tmp_path, capsys):
    """An attacker's detector trained with --defence gives the same scores through detect
    --defence; without the defence the detector's base-model hash does not match."""
    from helpers import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path / "model", with_chat_template=True)
    loaded_like = tiny_loaded(chat=True)
    import mia_tuner.models as models
    from mia_tuner.config import ModelConfig

    loaded = models.load_model(ModelConfig(name=str(model_dir)), cache_dir=str(tmp_path / "cache"))
    save_defence(tmp_path / "def", DefendedModel(loaded.model, random_prompt(loaded_like)), loaded,
                 DefenceConfig(), trained_on=[toy_set(2)], history={})
    data = write_jsonl(tmp_path / "set.jsonl",
                       [{"input": t, "label": y} for t, y in zip(toy_set(10).texts, toy_set(10).labels)])
    common = ["--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    assert main(["train", "--model", str(model_dir), "--data", str(data), *common, "--epochs", "1",
                 "--batch-per-class", "2", "--train-per-class", "8", "--test-per-class", "2",
                 "--validation-per-class", "2", "--num-virtual-tokens", "4", "--no-compare",
                 "--defence", str(tmp_path / "def"), "--out", str(tmp_path / "run")]) == 0
    frame = pd.read_csv(tmp_path / "run" / "scores.csv")
    capsys.readouterr()
    detector = str(tmp_path / "run" / "detector")
    assert main(["detect", "--detector", detector, "--model", str(model_dir), "--text", frame["text"][0],
                 "--defence", str(tmp_path / "def"), *common]) == 0
    score = float(capsys.readouterr().out.split("\t")[0])
    assert score == pytest.approx(frame["mia-tuner"][0], abs=1e-6)
    assert main(["detect", "--detector", detector, "--model", str(model_dir), "--text", frame["text"][0],
                 *common]) == 2
    assert "fingerprint" in capsys.readouterr().err


def test_a_saved_defence_is_loaded_not_trained_again(tmp_path, monkeypatch):
    from mia_tuner.training.trainer import Trainer

    loaded = tiny_loaded(chat=False)
    config = DefenceConfig(epochs=1, batch_per_class=2, validation_per_class=0)
    first, history = train_defence(loaded, toy_set(4), None, config, tmp_path / "d")
    def refuse(*args, **kwargs):
        raise RuntimeError("trained again")

    monkeypatch.setattr(Trainer, "fit", refuse)
    again, history_again = train_defence(loaded, toy_set(4), None, config, tmp_path / "d")
    assert torch.equal(again.prompt, first.prompt) and history_again.steps == history.steps
    with pytest.raises(RuntimeError, match="trained again"):  # other settings: trained anew
        train_defence(loaded, toy_set(4), None, DefenceConfig(epochs=2, batch_per_class=2,
                                                              validation_per_class=0), tmp_path / "d")


def test_a_kl_bound_keeps_an_epoch_within_it_or_the_lowest(tmp_path):
    """Each epoch's validation KL is measured on the validation non-members and logged; with
    the bound, the kept epoch is the lowest-KL one when none is within it (a bound of 0
    that no trained LoRA meets), and the kept state is that epoch's."""
    config = DefenceConfig(peft="lora", epochs=3, batch_per_class=2, learning_rate=0.05,
                           validation_per_class=2, selection_max_kl=0.0)
    data = toy_set(6)
    train, validation = data.subset(range(4, 12)), data.subset(range(4))
    model, history = train_defence(tiny_loaded(chat=False), train, validation, config, tmp_path / "d",
                                   resume=False)
    kls = [e["validation_kl"] for e in history.epochs]
    assert len(kls) == 3 and all(k > 0 for k in kls)
    assert history.chosen_epoch == 1 + int(np.argmin(kls))
    assert "kl <= 0" in history.selection.replace("validation_kl", "kl")
    pipeline = DefencePipeline(tiny_loaded(chat=False).tokenizer, config)
    nonmembers = [t for t, y in zip(validation.texts, validation.labels) if y == 0]
    assert pipeline.mean_kl(model, nonmembers) == pytest.approx(min(kls), rel=1e-4)


@pytest.mark.parametrize("kls", [(0.1, 0.3, 0.2), (0.3, 0.1, 0.2), (0.3, 0.2, 0.1)])
def test_the_kl_bound_decides_the_defences_epoch(tmp_path, monkeypatch, kls):
    """The epoch with the lowest scripted KL is kept wherever it falls (at most one of the
    three could be the epoch the AUROC alone would keep)."""
    measured = iter(kls)
    monkeypatch.setattr(DefencePipeline, "mean_kl", lambda self, model, texts: next(measured))
    config = DefenceConfig(peft="lora", epochs=3, batch_per_class=2, learning_rate=0.05,
                           validation_per_class=2, selection_max_kl=0.05)
    data = toy_set(6)
    _, history = train_defence(tiny_loaded(chat=False), data.subset(range(4, 12)), data.subset(range(4)),
                               config, tmp_path / "d", resume=False)
    assert [e["validation_kl"] for e in history.epochs] == list(kls)
    assert history.chosen_epoch == 1 + int(np.argmin(kls))


def test_defend_with_a_lora_defence_merges_it_for_the_attacks(tmp_path):
    loaded = tiny_loaded(chat=False)
    before = loaded.model(input_ids=IDS, attention_mask=MASK).logits.detach()
    config = DefenceConfig(peft="lora", epochs=1, batch_per_class=2, train_per_class=4,
                           validation_per_class=2, attack_train_per_class=3, learning_rate=0.05)
    result = defend(loaded, toy_set(20), config, tmp_path / "out", split_config=SplitConfig(max_test_per_class=5),
                    methods=MethodConfig(methods=["loss"]), cache_dir=tmp_path / "cache")
    assert [r["method"] for r in result.rows] == ["loss"]
    assert result.utility.kl > 0  # measured with the adapter on and off, before merging
    # the attacks ran on merged weights of a copy: the caller's model is the base model still
    after = loaded.model(input_ids=IDS, attention_mask=MASK).logits.detach()
    assert torch.equal(before, after)
    assert not any("lora" in name for name, _ in loaded.model.named_parameters())
    assert read_defence_info(tmp_path / "out" / "defence")["peft"] == "lora"


# ------------------------------------------------------------------ two processes

_DEFENCE_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from accelerate import Accelerator
from helpers import tiny_loaded
from test_safeguards import toy_set
from mia_tuner.safeguards.config import DefenceConfig
from mia_tuner.safeguards.train import train_defence

out = sys.argv[1]
for name, against, chat, term in (("scores", "scores", False, "contrastive"), ("mia-tuner", "mia-tuner", True,
                                  "contrastive"), ("shift", "scores", False, "shift")):
    config = DefenceConfig(against=against, epochs=2, batch_per_class=4, learning_rate=0.05,
                           num_virtual_tokens=3, distance_scale=0.5, member_term=term)
    train_defence(tiny_loaded(chat), toy_set(8), toy_set(2), config, f"{{out}}/{{name}}",
                  accelerator=Accelerator(cpu=True))
"""


def test_two_processes_train_the_same_defence(tmp_path):
    """torchrun with 2 CPU processes, each holding half of every batch: the contrastive terms
    gathered, the KL anchor's and the shift term's means over both halves, the gradient rescaled
    for DDP's average: the same defence as one process (against scores, with either member term,
    and against MIA-Tuner's answers)."""
    import os
    import shutil
    import sys
    import textwrap
    from pathlib import Path

    from safetensors.torch import load_file
    from test_tuner import free_port, run_group

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed next to the interpreter")
    script = tmp_path / "defend_script.py"
    script.write_text(textwrap.dedent(_DEFENCE_SCRIPT.format(tests=str(Path(__file__).parent))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for argv in ([sys.executable, str(script), str(tmp_path / "one")],
                 [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), str(script),
                  str(tmp_path / "two")]):
        returncode, stderr = run_group(argv, env, timeout=300)
        assert returncode == 0, stderr[-3000:]
    from mia_tuner.safeguards.artefact import initial_prompt

    for name in ("scores", "mia-tuner", "shift"):
        one, two = (load_file(tmp_path / part / name / "defence_prompt.safetensors")["prompt"]
                    for part in ("one", "two"))
        torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-5)
        start = initial_prompt(tiny_loaded(name == "mia-tuner"), DefenceConfig(num_virtual_tokens=3))
        assert (one - start).abs().max() > 1e-3  # the prompt moved: there was something to compare
        assert read_defence_info(tmp_path / "two" / name)["history"]["processes"] == 2
    shift = read_defence_info(tmp_path / "two" / "shift")["member_shift"]
    assert shift == pytest.approx(read_defence_info(tmp_path / "one" / "shift")["member_shift"])
