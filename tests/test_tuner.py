"""MIA-Tuner's pipelines, the shared trainer, the detector artefact and the train/detect CLI.

Everything runs on the tiny random Llama of tests/helpers.py (hidden size 32), so the numbers
say nothing about detection quality: the tests check shapes, hand computations, that training
lowers the loss, checkpoint selection, save/load and the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_tiny_tokenizer, tiny_loaded

from mia_tuner.cli import main
from mia_tuner.data.types import MembershipSet
from mia_tuner.errors import MethodError, ModelError
from mia_tuner.training.trainer import LAST_TOO_SMALL, SELECTION, Trainer, TrainerConfig, epoch_batches
from mia_tuner.tuner import prompts
from mia_tuner.tuner.api import train_detector
from mia_tuner.tuner.config import PRESETS, TunerConfig
from mia_tuner.tuner.detector import load_detector, read_detector_info
from mia_tuner.training.params import trainable_state
from mia_tuner.tuner.peft_setup import (forward_logits, init_text_ids,
                                        wrap_model)
from mia_tuner.tuner.pipelines import AlignedPipeline, BasePipeline, make_pipeline

TEXTS = ["The cat sat on the mat.", "A bird flew over the park near the river today.", "Dogs bark."]


def toy_set(n: int = 12) -> MembershipSet:
    texts, labels = [], []
    for i in range(n):
        texts += [f"The cat number {i} sat on the mat.", f"A bird called {i} flew over the park."]
        labels += [1, 0]
    return MembershipSet(texts, labels, name="toy")


def small_config(**overrides) -> TunerConfig:
    values = dict(num_virtual_tokens=4, epochs=2, batch_per_class=4, learning_rate=0.05,
                  validation_per_class=2, train_per_class=8, batch_size=4)
    return TunerConfig(**{**values, **overrides})


def setup(chat: bool, **overrides):
    loaded = tiny_loaded(chat)
    config = small_config(**overrides)
    pipeline = make_pipeline(loaded, config)
    return loaded, pipeline, wrap_model(loaded.model, loaded.tokenizer, config)


# ---------------------------------------------------------------- config and setup


def test_presets_and_mode_resolution():
    assert TunerConfig.from_preset("paper").learning_rate == 5e-4
    assert TunerConfig.from_preset("paper", epochs=3, learning_rate=None).epochs == 3
    assert TunerConfig().learning_rate == PRESETS["default"]["learning_rate"]
    with pytest.raises(MethodError, match="unknown preset"):
        TunerConfig.from_preset("fast")
    with pytest.raises(MethodError, match="peft"):
        TunerConfig(peft="adapter")
    chat, base = make_tiny_tokenizer(True), make_tiny_tokenizer(False)
    assert TunerConfig().resolve_mode(chat) == "aligned"
    assert TunerConfig().resolve_mode(base) == "base"
    assert TunerConfig(mode="base").resolve_mode(chat) == "base"


def test_make_pipeline_picks_by_template():
    assert isinstance(make_pipeline(tiny_loaded(True), small_config()), AlignedPipeline)
    assert isinstance(make_pipeline(tiny_loaded(False), small_config()), BasePipeline)
    with pytest.raises(ModelError, match="--chat-template"):
        make_pipeline(tiny_loaded(False), small_config(mode="aligned"))
    fallback = make_pipeline(tiny_loaded(False), small_config(chat_template="chatml"))
    assert isinstance(fallback, AlignedPipeline) and fallback.template_source == "fallback:chatml"


@pytest.mark.parametrize("kind", ["prompt", "lora", "prefix", "ia3"])
def test_wrap_model_trains_only_the_adapter(kind):
    loaded = tiny_loaded(False)
    model = wrap_model(loaded.model, loaded.tokenizer, small_config(peft=kind))
    trainable = trainable_state(model)
    assert trainable and all(("lora_" in n or "ia3_" in n or "prompt_encoder" in n) for n in trainable)
    ids = torch.tensor([[1, 5, 9, 12], [3, 4, 0, 0]])
    logits = forward_logits(model, ids, (ids != 0).long())
    assert logits.shape == (2, 4, len(loaded.tokenizer))
    full = model(input_ids=ids, attention_mask=(ids != 0).long()).logits  # soft prompt's too
    torch.testing.assert_close(logits, full[:, full.shape[1] - 4:])


def test_soft_prompt_starts_as_the_init_text():
    loaded, _, model = setup(False, num_virtual_tokens=7)
    ids = init_text_ids(loaded.tokenizer, prompts.INIT_TEXT, 7)
    expected = loaded.model.get_input_embeddings().weight[ids]
    prompt = model.prompt_encoder["default"].embedding.weight
    assert torch.allclose(prompt, expected)


# ---------------------------------------------------------------- pipelines


def test_aligned_encode_shapes_and_answer_positions():
    loaded, pipeline, _ = setup(True)
    batch = pipeline.encode(TEXTS, [1, 0, 1])
    ids, mask, start = batch["input_ids"], batch["attention_mask"], batch["answer_start"]
    assert ids.shape == mask.shape and ids.shape[0] == 3 and batch["is_member"].tolist() == [1, 0, 1]
    for row, (text, label) in enumerate(zip(TEXTS, [1, 0, 1])):
        expected, s = prompts.training_example_ids(loaded.tokenizer, text, bool(label))
        n = int(mask[row].sum())
        assert ids[row, :n].tolist() == expected and int(start[row]) == s
        assert mask[row, n:].sum() == 0  # right padding
        assert int(ids[row, s]) == (pipeline.yes_id if label else pipeline.no_id)
        assert ids[row, :s].tolist() == prompts.scoring_prompt_ids(loaded.tokenizer, text)


def test_base_encode_truncates_with_special_tokens():
    loaded, pipeline, _ = setup(False, max_tokens=5)
    batch = pipeline.encode(TEXTS, [1, 0, 0])
    full = loaded.tokenizer(TEXTS[1], add_special_tokens=True)["input_ids"]
    assert batch["input_ids"].shape[1] == 5 and batch["input_ids"][1].tolist() == full[:5]


def test_aligned_score_is_yes_share_by_hand():
    loaded, pipeline, model = setup(True)
    scores = pipeline.score(model, TEXTS, batch_size=2)
    for text, score in zip(TEXTS, scores):
        ids = torch.tensor([prompts.scoring_prompt_ids(loaded.tokenizer, text)])
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), dim=-1)
        p_yes, p_no = probs[pipeline.yes_id], probs[pipeline.no_id]
        assert score == pytest.approx(float(p_yes / (p_yes + p_no)), abs=1e-5)


def test_base_score_is_minus_mean_nll_by_hand():
    loaded, pipeline, model = setup(False, num_virtual_tokens=4)
    scores = pipeline.score(model, TEXTS, batch_size=2)
    for text, score in zip(TEXTS, scores):
        ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, 4:]  # drop the 4 virtual positions
        logp = torch.log_softmax(logits[:-1].double(), dim=-1)
        nll = -logp.gather(-1, ids[0, 1:, None]).mean()
        assert score == pytest.approx(-float(nll), abs=1e-5)


def test_calibrated_base_score_by_hand():
    """score = ℓ₀(x) − ℓ(x): the text's loss without the soft prompt minus with it."""
    loaded, pipeline, model = setup(False, num_virtual_tokens=4, base_score="calibrated")
    with torch.no_grad():  # give the soft prompt a visible effect
        model.prompt_encoder["default"].embedding.weight.mul_(3.0)
    scores = pipeline.score(model, TEXTS, batch_size=2)

    def mean_nll(logits, ids):
        logp = torch.log_softmax(logits[:-1].double(), dim=-1)
        return -float(logp.gather(-1, ids[0, 1:, None]).mean())

    for text, score in zip(TEXTS, scores):
        ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
        with torch.no_grad():
            prompted = mean_nll(model(input_ids=ids).logits[0, 4:], ids)
            plain = mean_nll(model.get_base_model()(input_ids=ids).logits[0], ids)
        assert score == pytest.approx(plain - prompted, abs=1e-5)
    assert abs(float(scores[0])) > 1e-4  # the prompt moves the loss


def test_calibrated_base_pipeline_trains_and_saves(tmp_path):
    result = train_detector(tiny_loaded(False), toy_set(), small_config(epochs=2, base_score="calibrated"),
                            out_dir=tmp_path / "run")
    texts = list(result.split.test.texts)
    steps = result.history.steps
    assert steps[-1]["total"] < steps[0]["total"]
    reloaded = load_detector(result.detector_dir, tiny_loaded(False))
    np.testing.assert_allclose(reloaded.score(texts), result.detector.score(texts), atol=1e-6)


@pytest.mark.parametrize("chat", [True, False])
def test_shared_prefix_gives_the_same_loss_and_gradient(chat):
    """The soft prompt and the chat template's opening run once per batch: the loss and the
    soft prompt's gradient equal those of the plain forward (every row runs it all)."""
    results = {}
    for share in (False, True):
        loaded, pipeline, model = setup(chat, num_virtual_tokens=4, share_prefix=share)
        texts = [*TEXTS, "A fourth text."] if chat else \
            ["The cat sat.", "The cat ran over the mat today.", "The cat.", "The cat is black."]
        batch = pipeline.encode(texts, [1, 0, 1, 0])
        total, _ = pipeline.loss(model, batch)
        total.backward()
        weight = model.prompt_encoder["default"].embedding.weight
        results[share] = (float(total), weight.grad.clone(), pipeline.score(model, texts))
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-5)
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(results[True][2], results[False][2], rtol=1e-5, atol=1e-6)
    batch = pipeline.encode(texts, [1, 0, 1, 0])
    from mia_tuner.tuner.peft_setup import common_prefix_length

    assert common_prefix_length(batch["input_ids"], batch["attention_mask"]) >= (10 if chat else 2)


@pytest.mark.parametrize("chat", [True, False])
def test_gradient_checkpointing_gives_the_same_loss_and_gradient(chat):
    """Activations recomputed in the backward: the same loss and soft-prompt gradient."""
    results = {}
    for checkpointing in (False, True):
        _, pipeline, model = setup(chat, num_virtual_tokens=4, gradient_checkpointing=checkpointing)
        model.train()
        batch = pipeline.encode([*TEXTS, "A fourth text."], [1, 0, 1, 0])
        total, _ = pipeline.loss(model, batch)
        total.backward()
        results[checkpointing] = (float(total), model.prompt_encoder["default"].embedding.weight.grad.clone())
    assert model.get_base_model().is_gradient_checkpointing
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-6)
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-5, atol=1e-7)


def test_loss_variants_run():
    _, pipeline, model = setup(True, full_vocab_classification=True)
    total, parts = pipeline.loss(model, pipeline.encode(TEXTS[:2], [1, 0]))
    assert torch.isfinite(total) and parts["classification"] > 1.0  # CE over the whole vocabulary
    _, pipeline, model = setup(True, long_answer=True)
    total, parts = pipeline.loss(model, pipeline.encode(TEXTS[:2], [1, 0]))
    assert torch.isfinite(total) and set(parts) >= {"lm", "classification", "error", "total"}


# ---------------------------------------------------------------- trainer


def test_epoch_batches_are_balanced_and_full():
    rng = np.random.default_rng(0)
    batches = epoch_batches(list(range(10)), list(range(10, 17)), 4, rng)
    assert len(batches) == 3 and all(len(m) == 4 and len(n) == 4 for m, n in batches)
    assert sorted(sum((m for m, _ in batches), [])[:10]) == list(range(10))


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("peft", ["prompt", "lora", "prefix", "ia3"])
def test_training_lowers_the_loss(chat, peft):
    lr = 0.01 if peft == "lora" else 0.1  # LoRA oscillates at 0.1 on this tiny model
    _, pipeline, model = setup(chat, learning_rate=lr, peft=peft)
    train = toy_set(4)  # one step per epoch holds every text, so steps compare like with like
    trainer = Trainer(model, pipeline.loss, pipeline.encode,
                      TrainerConfig(learning_rate=lr, epochs=6, batch_per_class=4))
    history = trainer.fit(train)
    first, last = history.steps[0]["total"], history.steps[-1]["total"]
    assert len(history.steps) == 6 and last < first - 1e-4, (first, last)
    assert history.selection == LAST_TOO_SMALL and history.chosen_epoch == 6


def _scripted_scores(validation: MembershipSet, aurocs: list[float], states: list):
    """A score function giving the listed validation AUROCs call by call; records the states."""
    labels = np.array(validation.labels)
    calls = {"n": 0}

    def score(model, texts):
        target = aurocs[min(calls["n"], len(aurocs) - 1)]
        calls["n"] += 1
        states.append(trainable_state(model))
        # members above non-members (AUROC 1), below (0), or all tied (0.5)
        signs = {1.0: 1.0, 0.0: -1.0, 0.5: 0.0}[target]
        return signs * (labels - 0.5)

    return score


def test_trainer_refuses_an_unknown_selection_objective():
    with pytest.raises(ValueError, match="objective must be one of"):
        TrainerConfig(learning_rate=0.1, epochs=1, batch_per_class=2, objective="min")


@pytest.mark.parametrize("per_class,objective,expected_epoch", [(2, "max", 2), (1, "max", 3), (2, "chance", 1)])
def test_checkpoint_selection(per_class, objective, expected_epoch):
    _, pipeline, model = setup(False)
    data = toy_set(6)
    train = data.subset(range(8, 12))
    validation = data.subset(range(2 * per_class))
    states: list = []
    score = _scripted_scores(validation, [0.5, 0.5, 1.0, 0.0], states)  # initial, epochs 1..3
    # "chance" (the defences'): the first epoch at 0.5 wins; "max": the epoch at 1.0
    trainer = Trainer(model, pipeline.loss, pipeline.encode,
                      TrainerConfig(learning_rate=0.1, epochs=3, batch_per_class=2, objective=objective,
                                    initial_candidate=objective == "max"), score_fn=score)
    history = trainer.fit(train, validation)
    assert [e["validation_auroc"] for e in history.epochs] == [0.5, 1.0, 0.0]
    assert history.chosen_epoch == expected_epoch
    assert history.selection == (SELECTION[objective] if per_class == 2 else LAST_TOO_SMALL)
    final = trainable_state(trainer.model)
    for name, value in states[expected_epoch].items():
        assert torch.equal(final[name], value)
    assert not torch.equal(states[2][next(iter(final))], states[3][next(iter(final))])


def test_the_untrained_state_can_be_kept():
    _, pipeline, model = setup(False)
    data = toy_set(6)
    train, validation = data.subset(range(8, 12)), data.subset(range(4))
    states: list = []
    score = _scripted_scores(validation, [1.0, 0.5, 0.0, 0.5], states)  # initial best
    trainer = Trainer(model, pipeline.loss, pipeline.encode,
                      TrainerConfig(learning_rate=0.1, epochs=3, batch_per_class=2), score_fn=score)
    history = trainer.fit(train, validation)
    assert history.chosen_epoch == 0 and history.initial_validation_auroc == 1.0
    final = trainable_state(trainer.model)
    assert all(torch.equal(final[name], value) for name, value in states[0].items())
    _, pipeline, model = setup(False)
    off = Trainer(model, pipeline.loss, pipeline.encode,
                  TrainerConfig(learning_rate=0.1, epochs=3, batch_per_class=2, initial_candidate=False),
                  score_fn=_scripted_scores(validation, [1.0, 0.5, 0.0, 0.5], []))
    assert off.fit(train, validation).chosen_epoch == 1


def test_on_epoch_hook_adds_to_history_without_changing_the_choice():
    _, pipeline, model = setup(False)
    data = toy_set(6)
    train, validation = data.subset(range(8, 12)), data.subset(range(4))
    seen = []

    def hook(epoch, m):
        seen.append((epoch, m.training))
        return {"curve": 10 * epoch}

    score = _scripted_scores(validation, [0.5, 0.5, 1.0, 0.0], [])
    trainer = Trainer(model, pipeline.loss, pipeline.encode,
                      TrainerConfig(learning_rate=0.1, epochs=3, batch_per_class=2),
                      score_fn=score, on_epoch=hook)
    history = trainer.fit(train, validation)
    assert [e["curve"] for e in history.epochs] == [10, 20, 30]
    assert [epoch for epoch, _ in seen] == [1, 2, 3] and history.chosen_epoch == 2


@pytest.mark.parametrize("aurocs,bounded,expected_epoch", [
    # initial, epochs 1..3 (closest to 0.5 wins; a tie keeps the earlier epoch)
    ([0.5, 0.5, 1.0, 0.0], (0.30, 0.02, 0.20), 2),   # the one epoch within the bound, the worst AUROC
    ([0.5, 1.0, 0.5, 0.5], (0.02, 0.30, 0.30), 1),   # within it beats a later, better epoch outside it
    ([0.5, 0.5, 1.0, 0.0], (0.01, 0.02, 0.30), 1),   # two within it: the AUROC decides
    ([0.5, 0.5, 1.0, 0.0], (0.30, 0.20, 0.25), 2),   # none within it: the lowest value
    ([0.5, 0.5, 1.0, 0.0], (float("nan"), 0.20, 0.25), 2),  # an unmeasured epoch is the worst
])
def test_selection_under_a_bound(aurocs, bounded, expected_epoch):
    _, pipeline, model = setup(False)
    data = toy_set(6)
    train, validation = data.subset(range(8, 12)), data.subset(range(4))
    states: list = []
    score = _scripted_scores(validation, aurocs, states)
    config = TrainerConfig(learning_rate=0.1, epochs=3, batch_per_class=2, objective="chance",
                           initial_candidate=False, bound_key="kl", bound_max=0.05)
    trainer = Trainer(model, pipeline.loss, pipeline.encode, config, score_fn=score,
                      on_epoch=lambda epoch, m: {"kl": bounded[epoch - 1]})
    history = trainer.fit(train, validation)
    assert history.chosen_epoch == expected_epoch
    assert history.selection == "validation AUROC closest to 0.5 among epochs with kl <= 0.05 (if none is: the lowest kl)"
    final = trainable_state(trainer.model)
    assert all(torch.equal(final[name], value) for name, value in states[expected_epoch].items())


def test_a_bound_needs_its_value_and_no_untrained_candidate():
    with pytest.raises(ValueError, match="both bound_key and bound_max"):
        TrainerConfig(learning_rate=0.1, epochs=1, batch_per_class=2, bound_key="kl", initial_candidate=False)
    with pytest.raises(ValueError, match="initial_candidate=False"):
        TrainerConfig(learning_rate=0.1, epochs=1, batch_per_class=2, bound_key="kl", bound_max=0.1)
    _, pipeline, model = setup(False)
    data = toy_set(6)
    config = TrainerConfig(learning_rate=0.1, epochs=1, batch_per_class=2, initial_candidate=False,
                           bound_key="kl", bound_max=0.1)
    trainer = Trainer(model, pipeline.loss, pipeline.encode, config,
                      score_fn=_scripted_scores(data.subset(range(4)), [0.5, 0.5], []))
    with pytest.raises(ValueError, match="on_epoch did not return"):
        trainer.fit(data.subset(range(8, 12)), data.subset(range(4)))


# ---------------------------------------------------------------- detector artefact


@pytest.mark.parametrize("chat,peft", [(True, "prompt"), (False, "prompt"), (False, "lora"),
                                       (True, "prefix"), (False, "ia3")])
def test_save_load_gives_identical_scores(tmp_path, chat, peft):
    result = train_detector(tiny_loaded(chat), toy_set(), small_config(peft=peft, epochs=1),
                            out_dir=tmp_path / "run")
    texts = list(result.split.test.texts)
    before = result.detector.score(texts)
    info = read_detector_info(result.detector_dir)
    assert info["mode"] == ("aligned" if chat else "base")
    assert info["base_model"]["fingerprint"] == tiny_loaded(chat).fingerprint
    assert info["threshold"]["source"] == "validation non-members"
    assert set(info["metrics"]) == {"validation", "test"}
    if chat:
        assert {"yes_id", "no_id", "prompt_format"} <= set(info["pipeline"])
    detector = load_detector(result.detector_dir, tiny_loaded(chat))
    assert np.allclose(detector.score(texts), before, atol=1e-6)
    assert (detector.decide(texts) == (before >= info["threshold"]["value"])).all()
    assert np.allclose(result.scores["mia-tuner"], before, atol=1e-6)  # the test scores it returned


def test_load_refuses_another_base_model(tmp_path):
    result = train_detector(tiny_loaded(False), toy_set(), small_config(epochs=1),
                            out_dir=tmp_path / "run")
    other = tiny_loaded(False, seed=1)
    with pytest.raises(ModelError) as error:
        load_detector(result.detector_dir, other)
    assert tiny_loaded(False).fingerprint in str(error.value) and other.fingerprint in str(error.value)


def run_train_cell(tmp_path, model, methods, reference=None):
    """A `train` cell (suite.single): the baselines ``methods`` on the untouched tiny chat model,
    then MIA-Tuner trained with small_config, its detector in tmp_path/run."""
    from mia_tuner.config import MethodConfig, RunConfig, SplitConfig
    from mia_tuner.suite.config import TunerVariant
    from mia_tuner.suite.single import command_cell, run_single_cell

    config = small_config(epochs=1)
    run = RunConfig.compose(model, split=SplitConfig(max_train_per_class=config.train_per_class, seed=config.seed),
                            methods=MethodConfig(methods=methods), reference=reference, out=tmp_path / "run",
                            cache_dir=tmp_path / "cache")
    variant = TunerVariant(settings={k: v for k, v in config.to_dict().items() if k not in ("train_per_class", "seed")})
    cell = command_cell(run, toy_set(), tuner=[variant], artefact_dir=str(tmp_path / "run"))
    return run_single_cell(cell, run.out, data=toy_set(), loaded=tiny_loaded(True))


def test_a_train_cell_compares_on_the_same_texts(tmp_path):
    from mia_tuner.config import ModelConfig

    result = run_train_cell(tmp_path, ModelConfig(name="tiny-0", device="cpu"), ["loss", "blind"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"mia-tuner", "loss", "blind"} <= set(metrics["methods"])
    assert metrics["n_texts"] == len(result.test)
    learned = metrics["extra"]["learned"]["mia-tuner"]
    assert learned["train_seconds"] > 0 and learned["validation"] == {"member": 2, "nonmember": 2}
    assert (tmp_path / "run" / "detector" / "detector.json").is_file()


def test_the_reference_model_keeps_the_target_model_settings(tmp_path, monkeypatch):
    """train's `ref` loads the reference with the device, dtype and quantization the target
    was loaded with (only the name differs)."""
    from mia_tuner.config import ModelConfig

    seen = []

    def fake_load(config, cache_dir=None):
        seen.append(config)
        return tiny_loaded(True, seed=1)

    monkeypatch.setattr("mia_tuner.run.load_model", fake_load)
    target = ModelConfig(name="tiny-0", device="cpu", dtype="bfloat16", quantization="8bit")
    run_train_cell(tmp_path, target, ["ref"], reference="some-reference")
    assert [(c.name, c.device, c.dtype, c.quantization) for c in seen] == \
        [("some-reference", "cpu", "bfloat16", "8bit")]


# ---------------------------------------------------------------- CLI


def test_cli_train_then_detect(tiny_chat_model_dir, tmp_path, capsys):
    rows = [{"input": t, "label": y} for t, y in zip(toy_set(10).texts, toy_set(10).labels)]
    data = tmp_path / "set.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out, cache = tmp_path / "run", str(tmp_path / "cache")
    rc = main(["train", "--model", str(tiny_chat_model_dir), "--data", str(data), "--device", "cpu",
               "--epochs", "1", "--batch-per-class", "2", "--train-per-class", "8",
               "--test-per-class", "2", "--validation-per-class", "2", "--num-virtual-tokens", "4",
               "--methods", "loss,blind", "--cache-dir", cache, "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and "mia-tuner" in printed and f"Detector: {out / 'detector'}" in printed
    frame = pd.read_csv(out / "scores.csv")
    results = tmp_path / "results.jsonl"
    rc = main(["detect", "--detector", str(out / "detector"), "--file", str(data), "--device", "cpu",
               "--cache-dir", cache, "--out", str(results)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(lines) == len(rows)
    detected = {r["text"]: r for r in map(json.loads, results.read_text().splitlines())}
    for text, score in zip(frame["text"], frame["mia-tuner"]):
        assert detected[text]["score"] == pytest.approx(score, abs=1e-6)
        assert detected[text]["member"] == (score >= detected[text]["threshold"])
    rc = main(["detect", "--detector", str(out / "detector"), "--text", "Hello there.",
               "--device", "cpu", "--cache-dir", cache])
    assert rc == 0 and capsys.readouterr().out.count("\n") == 1


# ---------------------------------------------------------------- two processes

_DIST_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy
from accelerate import Accelerator
from test_tuner import small_config, tiny_loaded, toy_set
from mia_tuner.tuner.api import train_detector

out = sys.argv[1]
for chat in (True, False):
    config = small_config(epochs=2, batch_per_class=4)
    accelerator = Accelerator(cpu=True)
    result = train_detector(tiny_loaded(chat), toy_set(), config, out_dir=f"{{out}}/{{chat}}",
                            accelerator=accelerator)
    if accelerator.is_main_process:  # the test scores it returned
        numpy.save(f"{{out}}/{{chat}}/scores.npy", result.scores["mia-tuner"])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_group(argv, env, timeout):
    """Run a command in its own process group; on timeout kill the whole group (torchrun's
    workers too), so that a hung gloo rendezvous never outlives the test."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"{argv[0]} did not finish in {timeout} s: {stderr[-2000:]}")
    return process.returncode, stderr


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
                    reason="torchrun not installed next to the interpreter")
def test_two_processes_train_the_same_detector(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(textwrap.dedent(_DIST_SCRIPT.format(tests=str(Path(__file__).parent))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    for argv in ([sys.executable, str(script), str(tmp_path / "one")],
                 [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), str(script),
                  str(tmp_path / "two")]):
        returncode, stderr = run_group(argv, env, timeout=300)
        assert returncode == 0, stderr[-3000:]
    from safetensors.torch import load_file

    for chat in (True, False):
        one, two = (tmp_path / part / str(chat) for part in ("one", "two"))
        a = load_file(one / "detector" / "adapter_model.safetensors")
        b = load_file(two / "detector" / "adapter_model.safetensors")
        assert a.keys() == b.keys()
        for name in a:
            assert torch.allclose(a[name], b[name], atol=1e-5), name
        sa, sb = (np.load(p / "scores.npy") for p in (one, two))
        assert np.allclose(sa, sb, atol=1e-5)
        assert read_detector_info(two / "detector")["history"]["processes"] == 2
