"""Commands as one-cell suites (suite.single): a re-run reads the cell's records, and a record
is never read for what it was not made with: weights changed in place, another configuration
written into the same --out, a detector trained on other weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import labelled_rows, make_tiny_model_dir, write_jsonl

import mia_tuner.models as models
from mia_tuner.cli import main


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIA_TUNER_CACHE", str(tmp_path / "default-cache"))


def scores_argv(model, data, tmp_path, *extra):
    return ["scores", "--model", str(model), "--data", str(data), "--device", "cpu", "--methods", "loss,zlib",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), *extra]


def test_a_rerun_reads_the_records_and_loads_no_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "set.jsonl", labelled_rows(12))
    assert main(scores_argv(tiny_model_dir, data, tmp_path)) == 0
    first = pd.read_csv(tmp_path / "run" / "scores.csv")
    assert list((tmp_path / "run" / "cells").iterdir())  # the cell's records

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", no_model)
    assert main(scores_argv(tiny_model_dir, data, tmp_path)) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "run" / "scores.csv"), first)
    info = json.loads((tmp_path / "run" / "metrics.json").read_text())["extra"]["methods"]
    assert all(row["computed"] == 0 and row["from_record"] for row in info.values())


def test_weights_changed_in_place_are_scored_again(tmp_path, capsys):
    model = make_tiny_model_dir(tmp_path / "model")
    data = write_jsonl(tmp_path / "set.jsonl", labelled_rows(12))
    assert main(scores_argv(model, data, tmp_path)) == 0
    before = pd.read_csv(tmp_path / "run" / "scores.csv")["loss"].to_numpy()
    make_tiny_model_dir(tmp_path / "model", seed=5)  # the same folder, other weights
    assert main(scores_argv(model, data, tmp_path)) == 0
    after = pd.read_csv(tmp_path / "run" / "scores.csv")["loss"].to_numpy()
    assert not np.allclose(before, after)


def test_an_overwritten_configuration_is_never_read_back(tiny_chat_model_dir, tmp_path, capsys):
    """train seed 1, seed 2 (--overwrite: it replaces the detector in --out), seed 1 again: the
    third run describes the detector that --out holds, not the first run's record."""
    data = write_jsonl(tmp_path / "set.jsonl", labelled_rows(10))
    out = tmp_path / "run"

    def train(seed: str):
        argv = ["train", "--model", str(tiny_chat_model_dir), "--data", str(data), "--device", "cpu",
                "--epochs", "1", "--batch-per-class", "2", "--train-per-class", "6", "--test-per-class", "2",
                "--validation-per-class", "2", "--num-virtual-tokens", "4", "--no-compare", "--seed", seed,
                "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--overwrite"]
        assert main(argv) == 0
        capsys.readouterr()
        return json.loads((out / "detector" / "detector.json").read_text())["tuner_config"]["seed"]

    assert train("1") == 1
    assert train("2") == 2 and len(list((out / "cells").iterdir())) == 1  # the first run's records dropped
    assert train("1") == 1
    learned = json.loads((out / "metrics.json").read_text())["extra"]["learned"]["mia-tuner"]
    assert learned["config"]["seed"] == 1
    shutil.rmtree(out / "detector")  # the record's detector gone: the same command makes it again
    assert train("1") == 1


def test_a_filed_detector_of_other_weights_is_not_read(tmp_path, monkeypatch):
    """A detector in the cache whose base model is not the cell's target (a controlled set
    built again) is trained again, not read; its files are checked first."""
    from types import SimpleNamespace

    import mia_tuner.tuner.detector as detector_module
    from mia_tuner.suite import detectors
    from mia_tuner.tuner.config import TunerConfig

    saved = tmp_path / "filed" / "detector"
    saved.mkdir(parents=True)
    (saved / detector_module.DETECTOR_FILE).write_text("{}")
    info = {"base_model": {"fingerprint": "old weights"}, "tuner_config": TunerConfig().to_dict()}
    checked = []
    monkeypatch.setattr(detector_module, "read_detector_info", lambda folder: info)
    monkeypatch.setattr(detector_module, "verify_detector_files", lambda folder, i: checked.append(folder))
    run = SimpleNamespace(describe=lambda: {"fingerprint": "new weights"},
                          split=SimpleNamespace(test=SimpleNamespace(texts=["a text"])))
    assert detectors.saved_detector_scores(run, saved.parent, TunerConfig()) is None
    assert checked == [saved]
    run.describe = lambda: {"fingerprint": "old weights"}  # the same weights, other settings
    assert detectors.saved_detector_scores(run, saved.parent, TunerConfig(epochs=1)) is None


def test_texts_longer_than_the_context_are_announced_from_the_config_alone(tiny_model_dir, tmp_path, caplog):
    """Without --max-tokens the cut is the model's context (128 tokens for the tiny model),
    read from its configuration before any weights are loaded."""
    import logging

    rows = [{"input": f"{i} " + " ".join(["word"] * 300), "label": i % 2} for i in range(8)]
    data = write_jsonl(tmp_path / "set.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        assert main(scores_argv(tiny_model_dir, data, tmp_path, "--train-fraction", "0.5")) == 0
    assert "longer than the 128 tokens scored per text" in caplog.text


def test_results_written_inside_the_model_folder_leave_its_key_alone(tmp_path, monkeypatch, capsys):
    """Only the model's own files key its weights: a run directory inside the model's folder
    (its run.json and records rewritten every run) is read back on the next run."""
    model = make_tiny_model_dir(tmp_path / "model")
    data = write_jsonl(tmp_path / "set.jsonl", labelled_rows(12))
    argv = scores_argv(model, data, tmp_path, "--out", str(model / "eval"))
    assert main(argv) == 0

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", no_model)
    assert main(argv) == 0


def test_a_reference_changed_in_place_is_read_again(tmp_path, capsys):
    model = make_tiny_model_dir(tmp_path / "model")
    reference = make_tiny_model_dir(tmp_path / "reference", seed=1)
    data = write_jsonl(tmp_path / "set.jsonl", labelled_rows(12))
    argv = ["scores", "--model", str(model), "--data", str(data), "--device", "cpu", "--methods", "ref",
            "--reference", str(reference), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    before = pd.read_csv(tmp_path / "run" / "scores.csv")["ref"].to_numpy()
    make_tiny_model_dir(reference, seed=7)
    assert main(argv) == 0
    assert not np.allclose(before, pd.read_csv(tmp_path / "run" / "scores.csv")["ref"].to_numpy())


def test_overwrite_keeps_records_no_run_of_a_command_wrote(tiny_model_dir, tmp_path, capsys):
    """A folder without run.json (a suite's, say) keeps its cells/ when a command is pointed at
    it with --overwrite: only a command's own records of another configuration are dropped."""
    suite_cell = tmp_path / "run" / "cells" / "a-suite-cell"
    suite_cell.mkdir(parents=True)
    (suite_cell / "loss.json").write_text("{}")
    data = write_jsonl(tmp_path / "set.jsonl", labelled_rows(12))
    assert main(scores_argv(tiny_model_dir, data, tmp_path, "--overwrite")) == 0
    assert (suite_cell / "loss.json").is_file()


def test_the_other_processes_start_once_the_first_has_claimed_the_folder(tmp_path, monkeypatch):
    """Under torchrun only the first process checks --out (and with --overwrite drops the
    replaced configuration's records); the others wait until run.json names their configuration,
    so none reads a record about to be dropped."""
    import threading
    import time

    from mia_tuner import rundir

    out, identity = tmp_path / "run", {"command": "B"}
    out.mkdir()
    rundir._write_record(out, "scores", {"command": "A"})  # the configuration --overwrite replaces
    monkeypatch.setenv("RANK", "1")
    claimed = threading.Timer(0.5, rundir._write_record, (out, "scores", identity))
    claimed.start()
    started = time.monotonic()
    with rundir.claim_run_dir(out, "scores", identity, overwrite=True):
        waited = time.monotonic() - started
    claimed.join()
    assert waited >= 0.4
    monkeypatch.setattr(rundir, "CLAIM_WAIT_SECONDS", 0.3)
    with pytest.raises(rundir.RunDirError, match="did not claim"):  # the first process never claims it
        with rundir.claim_run_dir(out, "scores", {"command": "C"}):
            pass
