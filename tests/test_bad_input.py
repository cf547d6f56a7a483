"""Every command walked through bad input of its own: one clear `mia-tuner: error:` line on
stderr, exit code 2, no traceback, and nothing written or computed before the error.

Runs `mia_tuner.cli.main` in-process on the tiny random models (a few cases also as a real
subprocess, where a traceback would show). The cases are tables: one row per bad input.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import labelled_rows, make_custom_code_model_dir, write_jsonl

from mia_tuner import cache as cache_module
from mia_tuner.cli import main

@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Own default cache, and no hub: a hub look-up fails at once instead of going online."""
    monkeypatch.setenv("MIA_TUNER_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Good and bad data files, each named for what is wrong with it."""
    good = write_jsonl(tmp_path / "good.jsonl", labelled_rows())
    out = {"good": good}
    out["empty"] = tmp_path / "empty.jsonl"
    out["empty"].write_text("")
    out["latin1"] = tmp_path / "latin1.jsonl"
    first_three = "".join(good.read_text().splitlines(keepends=True)[:3]).encode()
    out["latin1"].write_bytes(first_three + '{"input": "caf\xe9", "label": 1}\n'.encode("latin-1"))
    out["bad_json"] = tmp_path / "bad_json.jsonl"
    out["bad_json"].write_text('{"input": "a", "label": 1}\n{"input": "b", "label": \n')
    out["one_class"] = write_jsonl(tmp_path / "one_class.jsonl", [r for r in labelled_rows() if r["label"]])
    out["null_text"] = write_jsonl(tmp_path / "null_text.jsonl", [{"input": "fine text"}, {"input": None}])
    out["no_text"] = write_jsonl(tmp_path / "no_text.jsonl", [{"input": "fine text"}, {"other": "x"}])
    out["a_file"] = tmp_path / "a_file.txt"
    out["a_file"].write_text("not a folder")
    return out


def assert_clear_error(capsys, rc, *fragments) -> str:
    """rc 2; stderr is one `mia-tuner: error:` message holding every fragment; no traceback."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "mia-tuner: error:" in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def assert_usage_error(capsys, argv, *fragments) -> None:
    """argparse's refusal: exit 2 with the option and the reason, no traceback."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def scores_argv(model, data, tmp_path, *extra) -> list[str]:
    return ["scores", "--model", str(model), "--data", str(data), "--device", "cpu",
            "--methods", "loss", "--train-per-class", "8", "--test-per-class", "2",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), *extra]


# ---------------------------------------------------------------- scores

SCORES_CASES = [
    # (case, data file key or literal path, extra argv, fragments of the message)
    ("missing file", "missing.jsonl", [], ["missing.jsonl", "no such local file"]),
    ("empty file", "empty", [], ["has no rows (the file is empty)"]),
    ("not UTF-8", "latin1", [], ["line 4: not UTF-8 text"]),
    ("broken JSON line", "bad_json", [], ["line 2: not valid JSON"]),
    ("one class only", "one_class", [], ["only members"]),
    ("wrong text column", "good", ["--text-column", "text"], ["no text column 'text'", "--text-column"]),
    ("split of a single file", "good", ["--split", "x"], ["drop --split x"]),
    ("no method named", "good", ["--methods", ","], ["names no method"]),
    ("unknown method", "good", ["--methods", "lossy"], ["unknown method", "lossy"]),
    ("ref without reference", "good", ["--methods", "ref"], ["--reference"]),
    ("neighbours file missing", "good", ["--methods", "neighbor", "--neighbors-file", "nope.jsonl"],
     ["cannot read the neighbours file"]),
    ("hub name that is a typo", "data/typo", [], ["cannot be reached", "HF_HUB_OFFLINE"]),
    ("masked LM offline", "good", ["--methods", "neighbor", "--perturbation-model", "roberta-base"],
     ["--perturbation-model", "cannot be reached"]),
]


@pytest.mark.parametrize("case,data,extra,fragments", SCORES_CASES, ids=[c[0] for c in SCORES_CASES])
def test_scores_bad_input(case, data, extra, fragments, tiny_model_dir, files, tmp_path, capsys):
    started = time.perf_counter()
    path = files.get(data, data)
    rc = main(scores_argv(tiny_model_dir, path, tmp_path, *extra))
    assert_clear_error(capsys, rc, *fragments)
    assert not (tmp_path / "run").exists()
    assert time.perf_counter() - started < 20  # no minute of hub retries


USAGE_CASES = [
    ("negative seed", ["--seed", "-1"], ["--seed", "in [0, 2^32)"]),
    ("seed not a number", ["--seed", "x"], ["--seed", "must be an integer"]),
    ("max tokens 1", ["--max-tokens", "1"], ["--max-tokens", "at least 2"]),
    ("k of 0", ["--k", "0"], ["--k", "in (0, 1]"]),
    ("test size 0", ["--test-per-class", "0"], ["--test-per-class", "positive integer"]),
    ("batch size text", ["--batch-size", "eight"], ["--batch-size", "positive integer"]),
]


@pytest.mark.parametrize("case,extra,fragments", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_scores_bad_options(case, extra, fragments, tiny_model_dir, files, tmp_path, capsys):
    assert_usage_error(capsys, scores_argv(tiny_model_dir, files["good"], tmp_path, *extra), *fragments)


def test_scores_out_naming_a_file_fails_before_any_work(tiny_model_dir, files, tmp_path, capsys):
    argv = scores_argv(tiny_model_dir, files["good"], tmp_path)
    argv[argv.index("--out") + 1] = str(files["a_file"])
    assert_clear_error(capsys, main(argv), "is an existing file")
    assert not (tmp_path / "cache").exists()  # nothing was scored


def test_scores_unknown_model(files, tmp_path, capsys):
    rc = main(scores_argv(tmp_path / "no-such-model", files["good"], tmp_path))
    assert_clear_error(capsys, rc, "could not load model", "no-such-model")


def test_custom_model_code_is_never_run_unasked(tiny_model_dir, files, tmp_path, capsys, monkeypatch):
    """A folder whose config asks for its own code: refused without a prompt (stdin is closed)."""
    folder = make_custom_code_model_dir(tiny_model_dir, tmp_path / "custom")
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    rc = main(scores_argv(folder, files["good"], tmp_path))
    assert_clear_error(capsys, rc, "could not load model", "--trust-remote-code")


def test_locked_cache_waits_then_fails_clearly(tiny_model_dir, files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cache_module, "LOCK_TIMEOUT", 0.5)
    cache_file = tmp_path / "cache" / "scores.sqlite"
    cache_module.ScoreCache(cache_file).close()
    holder = sqlite3.connect(cache_file)
    holder.execute("BEGIN EXCLUSIVE")  # another run in the middle of a write
    try:
        started = time.perf_counter()
        rc = main(scores_argv(tiny_model_dir, files["good"], tmp_path))
        waited = time.perf_counter() - started
    finally:
        holder.rollback()
        holder.close()
    assert_clear_error(capsys, rc, "stayed locked by another process for 0.5 s", "--no-cache")
    assert waited >= 0.5


def test_corrupt_cache_file(tiny_model_dir, files, tmp_path, capsys):
    cache_file = tmp_path / "cache" / "scores.sqlite"
    cache_file.parent.mkdir()
    cache_file.write_bytes(b"this is not a database" * 100)
    rc = main(scores_argv(tiny_model_dir, files["good"], tmp_path))
    assert_clear_error(capsys, rc, "not a usable score cache")


def test_skip_invalid_says_how_many_rows_it_skipped(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "some_bad.jsonl",
                       labelled_rows() + [{"input": "", "label": 1}, {"input": "x", "label": 5}])
    rc = main(scores_argv(tiny_model_dir, data, tmp_path, "--skip-invalid"))
    out = capsys.readouterr().out
    assert rc == 0
    assert "Skipped 2 invalid row(s) (--skip-invalid)" in out and "1 with an empty" in out


# ---------------------------------------------------------------- detect


def detect_argv(detector, tmp_path, *extra) -> list[str]:
    return ["detect", "--detector", str(detector), "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), *extra]


def weights_file(detector: Path) -> Path:
    return next(detector.glob("adapter_model*"))


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])
    path.write_bytes(bytes(data))


def _edit_json(path: Path, change) -> None:
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


DETECTOR_DAMAGE = [
    ("weights flipped", lambda d: _flip_bytes(weights_file(d)), ["SHA-256 mismatch"]),
    ("weights truncated", lambda d: weights_file(d).write_bytes(weights_file(d).read_bytes()[:100]),
     ["SHA-256 mismatch"]),
    ("weights missing", lambda d: weights_file(d).unlink(), ["no adapter weights"]),
    ("adapter config missing", lambda d: (d / "adapter_config.json").unlink(), ["no adapter_config.json"]),
    ("adapter config edited", lambda d: _edit_json(d / "adapter_config.json", lambda i: i.update(r=4)),
     ["adapter_config.json", "SHA-256 mismatch"]),
    ("detector.json not JSON", lambda d: (d / "detector.json").write_text("{not json"), ["not valid JSON"]),
    ("detector.json incomplete", lambda d: _edit_json(d / "detector.json", lambda i: i.pop("threshold")),
     ["incomplete: no threshold"]),
    ("detector.json edited", lambda d: _edit_json(
        d / "detector.json", lambda i: i["threshold"].update(value=0.0)), ["changed or damaged"]),
    ("detector.json missing", lambda d: (d / "detector.json").unlink(), ["not a detector directory"]),
    ("folder missing", lambda d: shutil.rmtree(d), ["not a detector directory"]),
]


@pytest.mark.parametrize("case,damage,fragments", DETECTOR_DAMAGE, ids=[c[0] for c in DETECTOR_DAMAGE])
def test_damaged_detector_is_refused(case, damage, fragments, detector, tmp_path, capsys, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a damaged detector must not lead to a network request")

    monkeypatch.setattr("socket.create_connection", no_network)
    monkeypatch.setattr("socket.getaddrinfo", no_network)
    damage(detector)
    rc = main(detect_argv(detector, tmp_path, "--text", "Some text to check."))
    assert_clear_error(capsys, rc, *fragments)


def test_tampered_base_model_with_custom_code_is_not_run(detector, tiny_chat_model_dir, tmp_path,
                                                         capsys, monkeypatch):
    """detector.json pointing at a folder with custom code: refused before any code runs."""
    folder = make_custom_code_model_dir(tiny_chat_model_dir, tmp_path / "evil")
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    original = (detector / "detector.json").read_text()
    # edited by hand: the integrity hash catches it first ...
    _edit_json(detector / "detector.json", lambda i: i["base_model"].update(name=str(folder)))
    assert_clear_error(capsys, main(detect_argv(detector, tmp_path, "--text", "Hi there.")),
                       "changed or damaged")
    # ... and named on the command line, the custom code is still not run unasked
    (detector / "detector.json").write_text(original)
    rc = main(detect_argv(detector, tmp_path, "--text", "Hi there.", "--model", str(folder)))
    assert_clear_error(capsys, rc, "could not load model", "--trust-remote-code")


TEXT_CASES = [
    ("empty --text", lambda files: ["--text", ""], ["--text values", "empty text or one with no visible character"]),
    ("blank --text", lambda files: ["--text", "ok", "--text", "   "], ["--text 2"]),
    ("null text in file", lambda files: ["--file", str(files["null_text"])],
     ["missing or not a string (line 2)"]),
    ("missing text in file", lambda files: ["--file", str(files["no_text"])],
     ["missing or not a string (line 2)"]),
    ("wrong column", lambda files: ["--file", str(files["good"]), "--text-column", "text"],
     ["no column 'text'", "--text-column"]),
    ("empty file", lambda files: ["--file", str(files["empty"])], ["has no rows"]),
    ("out is a folder", lambda files: ["--text", "ok", "--out", str(files["good"].parent)], ["is a folder"]),
]


@pytest.mark.parametrize("case,extra,fragments", TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_detect_bad_texts(case, extra, fragments, detector, files, tmp_path, capsys):
    rc = main(detect_argv(detector, tmp_path, *extra(files)))
    assert_clear_error(capsys, rc, *fragments)


def test_detect_skip_invalid_scores_the_rest(detector, files, tmp_path, capsys):
    rc = main(detect_argv(detector, tmp_path, "--file", str(files["null_text"]), "--skip-invalid"))
    out = capsys.readouterr().out
    assert rc == 0
    assert "Skipped 1 row(s)" in out and out.count("member") == 1 and "None" not in out


# ---------------------------------------------------------------- train


def train_argv(model, data, tmp_path, *extra) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--device", "cpu",
            "--epochs", "1", "--batch-per-class", "2", "--train-per-class", "8",
            "--test-per-class", "2", "--validation-per-class", "2", "--num-virtual-tokens", "4", "--no-compare",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "train"), *extra]


TRAIN_CASES = [
    ("zero learning rate", ["--lr", "0"], ["learning_rate (--lr) must be > 0"]),
    ("validation too large", ["--validation-per-class", "8"], ["cannot take 8 for validation"]),
    ("aligned without a template", ["--mode", "aligned"], ["chat template"]),
]


@pytest.mark.parametrize("case,extra,fragments", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_bad_input(case, extra, fragments, tiny_model_dir, files, tmp_path, capsys):
    rc = main(train_argv(tiny_model_dir, files["good"], tmp_path, *extra))
    assert_clear_error(capsys, rc, *fragments)
    assert not (tmp_path / "train" / "detector").exists()


def test_train_bad_options(tiny_model_dir, files, tmp_path, capsys):
    for extra, fragment in ((["--seed", "-1"], "--seed"), (["--epochs", "0"], "--epochs"),
                            (["--max-tokens", "1"], "--max-tokens"), (["--peft", "bitfit"], "--peft")):
        assert_usage_error(capsys, train_argv(tiny_model_dir, files["good"], tmp_path, *extra), fragment)


def test_train_out_naming_a_file_fails_before_any_work(tiny_model_dir, files, tmp_path, capsys):
    argv = train_argv(tiny_model_dir, files["good"], tmp_path)
    argv[argv.index("--out") + 1] = str(files["a_file"])
    assert_clear_error(capsys, main(argv), "is an existing file")


# ---------------------------------------------------------------- data, models, demo

OTHER_CASES = [
    ("check: no set", lambda f, t: ["data", "check"], ["needs a set"]),
    ("check: missing set", lambda f, t: ["data", "check", str(t / "nope.jsonl")], ["no such local file"]),
    ("check: one fold", lambda f, t: ["data", "check", str(f["good"]), "--folds", "1"], ["--folds"]),
    ("controlled: bad lr", lambda f, t: ["data", "controlled", "--out", str(t / "c"), "--lr", "-1",
                                         "--corpus", str(f["good"])], ["--lr", "positive"]),
    ("controlled: missing corpus", lambda f, t: ["data", "controlled", "--out", str(t / "c"),
                                                 "--corpus", str(t / "nope.txt")], ["nope.txt"]),
    ("controlled: out is a file", lambda f, t: ["data", "controlled", "--out", str(f["a_file"])],
     ["is an existing file"]),
    ("build-wiki: bad months", lambda f, t: ["data", "build-wiki", "--members", "2015",
                                             "--non-members", "2024-03:2024-12", "--out", str(t / "w"),
                                             "--pages", str(f["good"])], ["month range"]),
    ("build-wiki: bad lengths", lambda f, t: ["data", "build-wiki", "--members", "2015-01:2015-02",
                                              "--non-members", "2024-03:2024-12", "--out", str(t / "w"),
                                              "--pages", str(f["good"]), "--lengths", "32,abc"], ["--lengths"]),
    ("build-wiki: no pages file", lambda f, t: ["data", "build-wiki", "--members", "2015-01:2015-02",
                                                "--non-members", "2024-03:2024-12", "--out", str(t / "w"),
                                                "--pages", str(t / "pages.jsonl")], ["pages file not found"]),
    ("models: unknown name", lambda f, t: ["models", "fetch", "llama-9000"], ["llama-9000"]),
    ("demo: out is a file", lambda f, t: ["demo", "--out", str(f["a_file"])], ["is an existing file"]),
]


@pytest.mark.parametrize("case,argv,fragments", OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_other_commands_bad_input(case, argv, fragments, files, tmp_path, capsys):
    try:
        rc = main(argv(files, tmp_path))
    except SystemExit as stop:  # argparse's own refusal
        err = capsys.readouterr().err
        assert stop.code == 2 and "Traceback" not in err
        assert all(f in err for f in fragments), err
        return
    assert_clear_error(capsys, rc, *fragments)


# ---------------------------------------------------------------- as a user sees it


@pytest.mark.parametrize("argv,fragment", [
    (["scores", "--data", "missing.jsonl", "--seed", "-1"], "in [0, 2^32)"),
    (["scores", "--data", "missing.jsonl", "--device", "cpu"], "no such local file"),
])
def test_a_real_process_prints_no_traceback(argv, fragment, tmp_path):
    env = {**os.environ, "MIA_TUNER_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "mia_tuner.cli", *argv], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and fragment in done.stderr
    assert "Traceback" not in done.stderr and not done.stdout.strip()
