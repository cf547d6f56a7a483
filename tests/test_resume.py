"""Runs that survive an interruption: a kill (Ctrl-C) during scoring, training or set building
loses at most the batch (scoring, training) or the few seconds (injection) in flight, and the
re-run computes only what the killed run had not, to the same result as an uninterrupted run.
Also: checkpoints are checked when read, and a truncated text is scored consistently."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_tiny_model, make_tiny_tokenizer
from test_tuner import small_config, tiny_loaded, toy_set

from mia_tuner.cli import main
from mia_tuner.errors import ArtefactError, Interrupted
from mia_tuner.methods import StatsProvider
from mia_tuner.models import load_model
from mia_tuner.training import trainer as trainer_module
from mia_tuner.training.checkpoint import Checkpoint
from mia_tuner.training.injection import InjectionConfig, continue_pretraining
from mia_tuner.tuner.api import train_detector
from mia_tuner.training.params import trainable_state

METHODS = "loss,zlib,min-k%,lowercase"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIA_TUNER_CACHE", str(tmp_path / "default-cache"))


def stop_on_call(monkeypatch, owner, name: str, on_call: int) -> dict:
    """Make ``owner.name`` raise KeyboardInterrupt on its ``on_call``-th call (1-based)."""
    original, calls = getattr(owner, name), {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return calls


# ---------------------------------------------------------------- scores


def _data_file(tmp_path: Path, n: int = 40) -> Path:
    rows = []
    for i in range(n):
        rows.append({"input": f"The cat number {i} sat on the mat{'!' * i} and looked at the dog.", "label": 1})
        rows.append({"input": f"A bird called {i} flew over the park{'.' * i} near the river.", "label": 0})
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _scores_argv(model, data, cache, out, *extra):
    return ["scores", "--model", str(model), "--data", str(data), "--device", "cpu", "--methods", METHODS,
            "--train-per-class", "4", "--test-per-class", "8", "--batch-size", "2",
            "--cache-dir", str(cache), "--out", str(out), *extra]


def test_killed_scoring_keeps_finished_batches_and_the_rerun_computes_the_rest(
        tiny_model_dir, tmp_path, capsys, monkeypatch):
    data = _data_file(tmp_path)
    clean = _scores_argv(tiny_model_dir, data, tmp_path / "clean-cache", tmp_path / "clean")
    assert main(clean) == 0
    capsys.readouterr()
    argv = _scores_argv(tiny_model_dir, data, tmp_path / "cache", tmp_path / "run")
    with monkeypatch.context() as patch:  # Ctrl-C as the 4th batch starts (3 of 8 done)
        stop_on_call(patch, StatsProvider, "_run", on_call=3 * 2 + 1)  # 2 passes a batch: text, lowercased
        rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 130 and "Traceback" not in err
    assert "interrupted: 6 of 16 texts to score were finished and kept in the score cache" in err
    assert main(argv) == 0
    capsys.readouterr()
    info = json.loads((tmp_path / "run" / "metrics.json").read_text())["extra"]["methods"]
    assert {name: row["computed"] for name, row in info.items()} == dict.fromkeys(METHODS.split(","), 10)
    resumed = pd.read_csv(tmp_path / "run" / "scores.csv")
    fresh = pd.read_csv(tmp_path / "clean" / "scores.csv")
    for name in METHODS.split(","):
        np.testing.assert_allclose(resumed[name], fresh[name], rtol=1e-12)


def test_ctrl_c_anywhere_else_is_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mia_tuner.models.load_model", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    rc = main(_scores_argv(tiny_model_dir, _data_file(tmp_path), tmp_path / "cache", tmp_path / "run"))
    err = capsys.readouterr().err
    assert rc == 130 and err.strip() == "mia-tuner: stopped (Ctrl-C)"


def test_reused_out_folder_has_no_plot_of_a_dropped_method(tiny_model_dir, tmp_path, capsys):
    data, cache, out = _data_file(tmp_path), tmp_path / "cache", tmp_path / "run"
    assert main(_scores_argv(tiny_model_dir, data, cache, out)) == 0
    assert (out / "hist_zlib.png").is_file()
    argv = _scores_argv(tiny_model_dir, data, cache, out, "--overwrite")  # another configuration
    argv[argv.index("--methods") + 1] = "loss"
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob("hist_*.png")) == ["hist_loss.png"]
    assert json.loads((out / "metrics.json").read_text())["extra"]["model"]["device"] == "cpu"


# ---------------------------------------------------------------- training


def _train(out: Path, **overrides):
    config = small_config(epochs=3, batch_per_class=2, **overrides)
    return train_detector(tiny_loaded(True), toy_set(), config, out_dir=out)


def test_killed_training_resumes_to_the_same_detector(tmp_path, monkeypatch):
    reference = _train(tmp_path / "clean")
    steps_per_epoch = reference.history.steps_per_epoch
    kill_at = steps_per_epoch + 2  # during epoch 2, after its first step
    with monkeypatch.context() as patch:
        stop_on_call(patch, trainer_module.Trainer, "_step_batch", on_call=kill_at)
        with pytest.raises(Interrupted, match=r"epoch 2 of 3, after step 1.*re-run the same command"):
            _train(tmp_path / "run")
    calls = stop_on_call(monkeypatch, trainer_module.Trainer, "_step_batch", on_call=-1)
    resumed = _train(tmp_path / "run")
    total = 3 * steps_per_epoch
    assert calls["n"] == total - (kill_at - 1)  # only the steps the killed run had not finished
    assert len(resumed.history.steps) == total and resumed.history.chosen_epoch == reference.history.chosen_epoch
    for name, value in trainable_state(reference.detector.model).items():
        torch.testing.assert_close(trainable_state(resumed.detector.model)[name], value, rtol=0, atol=0)
    texts = list(reference.split.test.texts)
    np.testing.assert_array_equal(resumed.detector.score(texts), reference.detector.score(texts))
    # a finished run started again trains no step
    calls["n"] = 0
    _train(tmp_path / "run")
    assert calls["n"] == 0


def test_other_settings_start_afresh_and_damage_is_refused(tmp_path, monkeypatch):
    steps_per_epoch = _train(tmp_path / "run").history.steps_per_epoch
    calls = stop_on_call(monkeypatch, trainer_module.Trainer, "_step_batch", on_call=-1)
    _train(tmp_path / "run", learning_rate=0.01)  # another run in the same folder: no resume
    assert calls["n"] == 3 * steps_per_epoch
    state = next((tmp_path / "run" / "checkpoint").glob("state-*.pt"))
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(ArtefactError, match="damaged.*--restart"):
        _train(tmp_path / "run", learning_rate=0.01)


def test_checkpoint_round_trip_and_key(tmp_path):
    checkpoint = Checkpoint(tmp_path / "ck", key="a")
    assert checkpoint.load() is None
    checkpoint.save({"x": torch.arange(3), "n": 1})
    checkpoint.save({"x": torch.arange(4), "n": 2})
    assert len(list((tmp_path / "ck").glob("state-*.pt"))) == 1  # the older state is removed
    assert checkpoint.load()["n"] == 2
    assert Checkpoint(tmp_path / "ck", key="b").load() is None
    (tmp_path / "ck" / "checkpoint.json").write_text("{")
    with pytest.raises(ArtefactError, match="damaged"):
        checkpoint.load()


# ---------------------------------------------------------------- injection (data controlled)


def _inject(tmp_path: Path, checkpoint: Checkpoint | None):
    tokenizer = make_tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    model = make_tiny_model(len(tokenizer))
    texts = [f"Member text number {i} about cats and dogs." for i in range(20)]
    config = InjectionConfig(epochs=2, batch_size=4, learning_rate=1e-3)
    return continue_pretraining(model, tokenizer, texts, config, checkpoint=checkpoint, checkpoint_every=0)


def test_killed_injection_resumes_to_the_same_model(tmp_path, monkeypatch):
    reference = _inject(tmp_path, None)["model"].state_dict()
    checkpoint = Checkpoint(tmp_path / "inject", key="k")
    with monkeypatch.context() as patch:  # Ctrl-C in step 8 of 10 (epoch 2)
        stop_on_call(patch, torch.optim.AdamW, "step", on_call=8)
        with pytest.raises(Interrupted, match="injection stopped at step 7 of 10"):
            _inject(tmp_path, checkpoint)
    resumed = _inject(tmp_path, checkpoint)
    assert resumed["steps"] == 10
    for name, value in reference.items():
        torch.testing.assert_close(resumed["model"].state_dict()[name], value, rtol=0, atol=0)


# ---------------------------------------------------------------- truncation


def test_zlib_lowercase_and_ref_read_the_truncated_text(tiny_model_dir):
    """A text cut to max_tokens: its compressed size, lowercased copy and reference likelihood
    are those of the words actually scored, not of the whole text."""
    from mia_tuner.config import MethodConfig
    from mia_tuner.methods import ScoringContext, build_methods

    loaded = load_model(str(tiny_model_dir))
    long_text = " ".join(f"Word{i} THE cat" for i in range(400))
    target = StatsProvider(loaded, max_tokens=12)
    reference = StatsProvider(loaded, max_tokens=100)
    ctx = ScoringContext(target=target, reference=reference, settings=MethodConfig(max_tokens=12))
    stats = target.get([long_text])[0]
    assert stats.truncated
    seen = loaded.tokenizer.decode(stats.token_ids, skip_special_tokens=True)
    assert target.seen_texts([long_text]) == [seen] and len(seen) < len(long_text) / 50
    by_name = {m.name: m for m in build_methods(["zlib", "lowercase", "ref"], ctx.settings)}
    zlib_score = by_name["zlib"].score([long_text], ctx)[0]
    assert zlib_score == pytest.approx(stats.mean_logprob / len(zlib.compress(seen.encode())))
    lowered = target.mean_logprobs([seen.lower()])[0]
    assert by_name["lowercase"].score([long_text], ctx)[0] == pytest.approx(lowered / stats.mean_logprob)
    ref_ll = reference.mean_logprobs([seen])[0]
    assert by_name["ref"].score([long_text], ctx)[0] == pytest.approx(stats.mean_logprob - ref_ll)
