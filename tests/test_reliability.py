"""Bad input and faults, second round (the cases beside tests/test_bad_input.py): a detector
that cannot be verified, texts with nothing visible or too few tokens, a test part too small to
read, files as spreadsheets and compressors write them, options that parse to nonsense, very
long texts, and two runs writing into one folder. Each case ends in one clear line with exit 2,
or in the documented behaviour; nothing is silently wrong.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging

import pytest
from helpers import labelled_rows, write_jsonl
from test_bad_input import assert_clear_error, assert_usage_error, detect_argv, scores_argv, train_argv, weights_file

from mia_tuner.cli import main
from mia_tuner.methods import StatsProvider
from mia_tuner.models import batching
from mia_tuner.rundir import LOCK_FILE

INVISIBLE = {"zero-width": "\u200b\u200c\u200d\ufeff", "combining marks": "\u0301\u0308\u0327"}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIA_TUNER_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def one_line(err: str) -> bool:
    """The error message (what follows `mia-tuner: error:`) is a single line."""
    return "\n" not in err.split("mia-tuner: error:", 1)[1].strip()


def with_rows(tmp_path, name: str, extra_rows: list[dict]):
    return write_jsonl(tmp_path / name, labelled_rows() + extra_rows)


# ---------------------------------------------------------------- 1. detectors without hashes


def _strip_hashes(detector) -> None:
    """What an old (version 1) detector looks like, or a current one whose check was removed."""
    path = detector / "detector.json"
    info = json.loads(path.read_text())
    info.pop("files"), info.pop("sha256")
    info["version"] = 1
    path.write_text(json.dumps(info))


def _flip_last_bytes(path) -> None:
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("also_damaged", [False, True], ids=["intact", "weights flipped"])
def test_a_detector_without_hashes_is_refused(also_damaged, detector, tmp_path, capsys):
    _strip_hashes(detector)
    if also_damaged:
        _flip_last_bytes(weights_file(detector))
    rc = main(detect_argv(detector, tmp_path, "--text", "Some text to check."))
    err = assert_clear_error(capsys, rc, "records no hashes", "re-train", "--trust-unverified-detector")
    assert one_line(err)


def test_an_unverified_detector_is_used_only_when_asked_and_says_so(detector, tmp_path, capsys):
    _strip_hashes(detector)
    with pytest.warns(UserWarning, match="unverified.*neither detector.json nor the adapter files are checked"):
        rc = main(detect_argv(detector, tmp_path, "--text", "Some text to check.", "--trust-unverified-detector"))
    assert rc == 0 and "member" in capsys.readouterr().out


def test_an_unreadable_adapter_is_one_line_naming_the_file(detector, tmp_path, capsys):
    _strip_hashes(detector)
    weights = weights_file(detector)
    weights.write_bytes(weights.read_bytes()[:100])  # cut short
    with pytest.warns(UserWarning):
        rc = main(detect_argv(detector, tmp_path, "--text", "Some text.", "--trust-unverified-detector"))
    err = assert_clear_error(capsys, rc, f"detector file {weights} cannot be read")
    assert one_line(err)


def test_a_damaged_model_file_is_one_line_naming_the_file(tiny_model_dir, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    rc = main(scores_argv(model, write_jsonl(tmp_path / "set.jsonl", labelled_rows()), tmp_path))
    err = assert_clear_error(capsys, rc, f"its weights file {weights}", "damaged or cut short")
    assert one_line(err)


# ---------------------------------------------------------------- 1. texts with nothing visible


@pytest.mark.parametrize("kind", list(INVISIBLE))
@pytest.mark.parametrize("command", ["scores", "train", "defend", "data check"])
def test_a_text_with_nothing_visible_is_an_empty_text(command, kind, tiny_model_dir, tmp_path, capsys):
    data = with_rows(tmp_path, "set.jsonl", [{"input": INVISIBLE[kind], "label": 1}])
    argv = {"scores": scores_argv(tiny_model_dir, data, tmp_path),
            "train": train_argv(tiny_model_dir, data, tmp_path),
            "defend": ["defend", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "d")],
            "data check": ["data", "check", str(data)]}[command]
    assert_clear_error(capsys, main(argv), "line 21", "no visible character", "--skip-invalid")


def test_invisible_texts_are_skipped_and_counted_when_asked(tiny_model_dir, tmp_path, capsys):
    data = with_rows(tmp_path, "set.jsonl", [{"input": text, "label": 1} for text in INVISIBLE.values()])
    assert main(scores_argv(tiny_model_dir, data, tmp_path, "--skip-invalid")) == 0
    assert "Skipped 2 invalid row(s) (--skip-invalid): 2 with an empty text or one with no visible" \
           in capsys.readouterr().out


def test_detect_refuses_a_text_with_nothing_visible(detector, tmp_path, capsys):
    rc = main(detect_argv(detector, tmp_path, "--text", "fine text", "--text", "\u200b\ufeff"))
    assert_clear_error(capsys, rc, "--text 2", "no visible character")


# ---------------------------------------------------------------- 1. a test part too small to read


def test_a_tiny_test_part_is_flagged_and_conflicts_are_counted_apart(tiny_model_dir, tmp_path, capsys):
    rows = labelled_rows(4)
    conflicting = [{"input": f"Shared text number {i} seen on both sides.", "label": y} for i in range(6) for y in (0, 1)]
    data = write_jsonl(tmp_path / "set.jsonl", rows + conflicting)
    assert main(scores_argv(tiny_model_dir, data, tmp_path, "--train-fraction", "0.5")) == 0
    out = capsys.readouterr().out
    assert "test 2 + 2" in out
    assert "0 duplicate rows removed, 12 rows dropped as conflicting (6 text(s) labelled both" in out
    assert "warning: only 2 members and 2 non-members are scored (fewer than 20 per class)" in out
    assert "deduplicate before splitting" not in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["warnings"] and "fewer than 20 per class" in metrics["warnings"][0]
    assert "fewer than 20 per class" in (tmp_path / "run" / "table.md").read_text()


# ---------------------------------------------------------------- 3. files as other programs write them


def _csv(tmp_path, name: str, delimiter: str, bom: bool = False, labels=("1", "0")):
    lines = [f"text{delimiter}label"]
    for row in labelled_rows():
        lines.append(f"\"{row['input']}\"{delimiter}{labels[1 - row['label']]}")
    path = tmp_path / name
    path.write_bytes(("\ufeff" if bom else "").encode() + ("\n".join(lines) + "\n").encode("utf-8"))
    return path


FILE_CASES = {
    "CSV with a byte-order mark": lambda t: _csv(t, "bom.csv", ",", bom=True),
    "semicolon-separated CSV": lambda t: _csv(t, "semi.csv", ";"),
    "tab-separated CSV with a mark": lambda t: _csv(t, "tabs.csv", "\t", bom=True),
    "JSONL with string labels": lambda t: write_jsonl(
        t / "strings.jsonl", [{"text": r["input"], "label": str(r["label"])} for r in labelled_rows()]),
    "gzip named .jsonl": lambda t: _gzip(t / "packed.jsonl"),
    "gzip named .jsonl.gz": lambda t: _gzip(t / "packed.jsonl.gz"),
}


def _gzip(path):
    rows = [{"text": r["input"], "label": r["label"]} for r in labelled_rows()]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_files_as_other_programs_write_them_are_read(case, tiny_model_dir, tmp_path, capsys):
    data = FILE_CASES[case](tmp_path)
    assert main(scores_argv(tiny_model_dir, data, tmp_path, "--text-column", "text")) == 0
    out = capsys.readouterr().out
    assert "rows: 20 (10 members, 10 non-members)" in out


def test_a_damaged_gzip_file_says_so(tmp_path, capsys):
    path = _gzip(tmp_path / "packed.jsonl.gz")
    path.write_bytes(path.read_bytes()[:30])
    assert_clear_error(capsys, main(["data", "check", str(path)]), "gzip-compressed but cannot be unpacked")


# ---------------------------------------------------------------- 3. texts of one token


def test_a_one_token_text_is_refused_before_any_forward_pass(tiny_model_dir, tmp_path, capsys, monkeypatch):
    def no_forward(*args, **kwargs):
        raise AssertionError("no forward pass may run before the texts are checked")

    monkeypatch.setattr(StatsProvider, "_forward", no_forward)
    data = with_rows(tmp_path, "set.jsonl", [{"input": "a", "label": 0}])
    rc = main(scores_argv(tiny_model_dir, data, tmp_path))
    assert_clear_error(capsys, rc, "1 text(s) have fewer than 2 tokens", "'a'", "--skip-invalid")


def test_one_token_texts_are_skipped_and_counted(tiny_model_dir, tmp_path, capsys):
    data = with_rows(tmp_path, "set.jsonl", [{"input": "a", "label": 0}, {"input": "The", "label": 1}])
    assert main(scores_argv(tiny_model_dir, data, tmp_path, "--skip-invalid")) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["extra"]["data"]["n_skipped"]["too_few_tokens"] == 2


# ---------------------------------------------------------------- 3. options and messages


@pytest.mark.parametrize("option,value", [("--con-recall-gamma", "nan"), ("--con-recall-gamma", "inf")])
def test_non_finite_numbers_are_refused_while_parsing(option, value, tiny_model_dir, tmp_path, capsys):
    assert_usage_error(capsys, scores_argv(tiny_model_dir, "x.jsonl", tmp_path, option, value), option)


def test_train_refuses_a_non_finite_loss_weight(tiny_model_dir, tmp_path, capsys):
    assert_usage_error(capsys, train_argv(tiny_model_dir, "x.jsonl", tmp_path, "--temperature", "nan"),
                       "--temperature", "finite")


def test_ctrl_c_without_cache_says_nothing_was_kept(tiny_model_dir, tmp_path, capsys, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(StatsProvider, "_forward", stop)
    data = write_jsonl(tmp_path / "set.jsonl", labelled_rows())
    rc = main(scores_argv(tiny_model_dir, data, tmp_path, "--no-cache"))
    err = capsys.readouterr().err
    assert rc == 130 and "nothing was kept (--no-cache)" in err and "starts again from the beginning" in err
    assert "re-run the same command to continue" not in err


# ---------------------------------------------------------------- 4. long texts


def test_length_batches_give_a_long_text_a_batch_of_its_own():
    lengths = [10, 9000, 12, 11, 300, 8]
    batches = batching.length_batches(lengths, batch_size=4, tokens_per_text=512)
    assert batches[0] == [1]  # 9000 tokens: alone
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) * max(lengths[i] for i in b) <= 4 * 512 or len(b) == 1 for b in batches)
    assert batching.length_batches([5] * 10, batch_size=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_long_text_is_announced_before_scoring_and_pads_no_short_one(tiny_model_dir, tmp_path, capsys,
                                                                       monkeypatch, caplog):
    widths, original = [], StatsProvider._forward

    def recording_forward(self, sequences, light=False):
        assert any("longer than the 120 tokens" in r.getMessage() for r in caplog.records), \
            "the long text must be announced before the first forward pass"
        widths.append([len(s) for s in sequences])
        return original(self, sequences, light)

    monkeypatch.setattr(StatsProvider, "_forward", recording_forward)
    monkeypatch.setattr(batching, "TOKENS_PER_TEXT", 30)  # a budget the tiny model's context exceeds
    long_texts = [{"input": f"{i} " + " ".join(["word"] * 400), "label": i % 2} for i in range(6)]
    data = with_rows(tmp_path, "set.jsonl", long_texts)
    with caplog.at_level(logging.WARNING):
        rc = main(scores_argv(tiny_model_dir, data, tmp_path, "--max-tokens", "120", "--test-per-class", "6",
                              "--train-fraction", "0.5"))
    assert rc == 0
    assert "scored on its first 120 tokens only" in caplog.text
    long_batches = [batch for batch in widths if max(batch) == 120]
    assert long_batches and all(min(batch) == 120 for batch in long_batches)  # no short text padded
    assert all(len(batch) * max(batch) <= 8 * 30 for batch in widths)  # the padded-token budget


# ---------------------------------------------------------------- 5. one run per folder


def test_another_configuration_is_not_written_over(tiny_model_dir, tmp_path, capsys):
    first = write_jsonl(tmp_path / "first.jsonl", labelled_rows())
    second = write_jsonl(tmp_path / "second.jsonl", labelled_rows(12))
    assert main(scores_argv(tiny_model_dir, first, tmp_path)) == 0
    before = (tmp_path / "run" / "scores.csv").read_text()
    assert main(scores_argv(tiny_model_dir, first, tmp_path)) == 0  # the same run again: fine
    capsys.readouterr()
    rc = main(scores_argv(tiny_model_dir, second, tmp_path))
    assert_clear_error(capsys, rc, "holds the results of another configuration", "data", "--overwrite")
    assert (tmp_path / "run" / "scores.csv").read_text() == before
    assert main(scores_argv(tiny_model_dir, second, tmp_path, "--overwrite")) == 0
    assert (tmp_path / "run" / "scores.csv").read_text() != before
    assert json.loads((tmp_path / "run" / "run.json").read_text())["command"] == "scores"


def test_results_without_a_record_are_not_written_over(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    data = write_jsonl(tmp_path / "set.jsonl", labelled_rows())
    assert_clear_error(capsys, main(scores_argv(tiny_model_dir, data, tmp_path)), "no run record", "--overwrite")


def test_a_second_run_into_a_busy_folder_stops_at_once(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / LOCK_FILE, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds the folder
        holder.write("pid 4242, started now")
        holder.flush()
        data = write_jsonl(tmp_path / "set.jsonl", labelled_rows())
        rc = main(scores_argv(tiny_model_dir, data, tmp_path))
    assert_clear_error(capsys, rc, "is in use by another run (pid 4242", "choose another --out")
    assert not (tmp_path / "cache").exists()  # nothing was scored
