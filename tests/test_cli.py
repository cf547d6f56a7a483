"""The `mia-tuner` command line: exit codes, messages on stderr and what each command prints.

Runs `mia_tuner.cli.main` in-process on the tiny random model; every run gets its own
--cache-dir and --out under tmp_path."""

from __future__ import annotations

import json

import pytest
from helpers import labelled_rows, write_jsonl

from mia_tuner.cli import build_parser, main
from mia_tuner.cli.scores import scores_config
from mia_tuner.config import default_cache_dir
from mia_tuner.methods import available_methods
from mia_tuner.models import offline

N_PER_CLASS = 10


@pytest.fixture
def data_file(tmp_path):
    return write_jsonl(tmp_path / "set.jsonl", labelled_rows())


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Point the default cache at tmp, so a missing --cache-dir never touches the user's."""
    cache = tmp_path / "default-cache"
    monkeypatch.setenv("MIA_TUNER_CACHE", str(cache))
    return cache


def scores_argv(model, data, tmp_path, *extra) -> list[str]:
    return ["scores", "--model", str(model), "--data", str(data), "--device", "cpu",
            "--train-per-class", "8", "--test-per-class", "6",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), *extra]


def assert_error(capsys, rc: int, *fragments: str) -> str:
    """rc is 2 and stderr is one `mia-tuner: error:` message holding every fragment."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "mia-tuner: error:" in err and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


# ---------------------------------------------------------------- scores


def test_scores_writes_the_run_directory(tiny_model_dir, data_file, tmp_path, capsys):
    rc = main(scores_argv(tiny_model_dir, data_file, tmp_path, "--methods", "loss,zlib"))
    out = capsys.readouterr().out
    assert rc == 0
    run = tmp_path / "run"
    for name in ("config.json", "scores.csv", "metrics.json", "table.md", "roc.png",
                 "hist_loss.png", "hist_zlib.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"loss", "zlib"}
    assert metrics["n_texts"] == 4  # 10 per class -> 8 train / 2 test per class
    assert f"Run directory: {run}" in out and "Data hygiene:" in out
    assert (tmp_path / "cache" / "scores.sqlite").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["cache_dir"] == str(tmp_path / "cache") and config["model"]["device"] == "cpu"


def test_scores_unknown_method(tiny_model_dir, data_file, tmp_path, capsys):
    rc = main(scores_argv(tiny_model_dir, data_file, tmp_path, "--methods", "loss,bogus"))
    assert_error(capsys, rc, "unknown method", "bogus", "min-k%++")
    assert not (tmp_path / "run").exists()


def test_scores_ref_without_reference(tiny_model_dir, data_file, tmp_path, capsys):
    rc = main(scores_argv(tiny_model_dir, data_file, tmp_path, "--methods", "ref"))
    assert_error(capsys, rc, "--reference")


def test_scores_missing_data_path(tiny_model_dir, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "set.jsonl"
    rc = main(scores_argv(tiny_model_dir, missing, tmp_path, "--methods", "loss"))
    assert_error(capsys, rc, str(missing), "no such local file or folder")


def test_scores_missing_text_column(tiny_model_dir, data_file, tmp_path, capsys):
    rc = main(scores_argv(tiny_model_dir, data_file, tmp_path, "--methods", "loss",
                          "--text-column", "text"))
    assert_error(capsys, rc, "'text'", "available columns", "input")


def test_scores_bad_labels_fail_without_skip_invalid(tiny_model_dir, tmp_path, capsys):
    rows = labelled_rows() + [{"input": "A text with label two.", "label": 2}]
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    rc = main(scores_argv(tiny_model_dir, data, tmp_path, "--methods", "loss"))
    err = assert_error(capsys, rc, "1 of 21 rows are invalid", "line 21", "label 2")
    assert "skip_invalid" in err or "skip-invalid" in err
    assert not (tmp_path / "run").exists()


def test_scores_bad_labels_skipped_with_skip_invalid(tiny_model_dir, tmp_path, capsys):
    rows = labelled_rows() + [{"input": "A text with label two.", "label": 2},
                              {"input": "   ", "label": 1}]
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    rc = main(scores_argv(tiny_model_dir, data, tmp_path, "--methods", "loss", "--skip-invalid"))
    assert rc == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "run" / "metrics.json").read_text())["extra"]["data"]
    assert info["n_skipped"]["invalid_label"] == 1 and info["n_skipped"]["empty_text"] == 1
    assert info["n_rows_read"] == 2 * N_PER_CLASS + 2


def test_scores_unknown_model_lists_what_was_tried(data_file, tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "model"
    rc = main(scores_argv(missing, data_file, tmp_path, "--methods", "loss"))
    assert_error(capsys, rc, f"could not load model {str(missing)!r}; tried:",
                 "not an offline model", "gemma-3-270m", "smollm2-135m-instruct",
                 "no local directory or .gguf file", "not a hub id")


def test_scores_unknown_hub_id_offline(data_file, tmp_path, capsys, monkeypatch):
    """A hub-like name with the hub switched off: the message says so, no network is tried."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(scores_argv("no-such-org/no-such-model-xyz", data_file, tmp_path, "--methods", "loss"))
    assert_error(capsys, rc, "could not load model 'no-such-org/no-such-model-xyz'",
                 "not an offline model", "HF_HUB_OFFLINE is set")


def test_scores_single_token_text_is_not_a_traceback(tiny_model_dir, tmp_path, capsys):
    # Three single-character members: one of them always lands in the test part.
    rows = [{"input": c, "label": 1} for c in "abc"]
    rows += [{"input": f"A bird called {i} flew over the park.", "label": 0} for i in range(3)]
    data = write_jsonl(tmp_path / "short.jsonl", rows)
    rc = main(scores_argv(tiny_model_dir, data, tmp_path, "--methods", "loss"))
    assert rc == 0 or "fewer than 2 tokens" in assert_error(capsys, rc)


@pytest.mark.parametrize("option", [["--k-sweep", "0.1,abc"], ["--k", "1.5"], ["--batch-size", "0"]],
                         ids=["k-sweep", "k", "batch-size"])
def test_scores_bad_numeric_option_is_an_error_message(tiny_model_dir, data_file, tmp_path,
                                                        capsys, option):
    argv = scores_argv(tiny_model_dir, data_file, tmp_path, "--methods", "loss,min-k%", *option)
    try:
        rc = main(argv)
    except SystemExit as exit_:  # an argparse usage error is fine too
        rc = exit_.code
    assert rc == 2


# ---------------------------------------------------------------- other commands


def test_methods_lists_every_name(capsys):
    assert main(["methods"]) == 0
    names = capsys.readouterr().out.split()
    assert sorted(names) == sorted(["loss", "zlib", "lowercase", "ref", "ez", "ref-min-k%", "ref-min-k%++", "min-k%",
                                    "min-k%++", "neighbor", "recall", "con-recall", "fsd", "blind", "fused",
                                    "fused+ref"])
    assert names == available_methods()


def test_models_list_prints_both_offline_models(capsys, isolated_cache):
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(offline.REGISTRY) == 2
    for name, line in zip(sorted(offline.REGISTRY), lines):
        assert line.split()[0] == name and "not fetched" in line
        assert str(isolated_cache) in line  # the state of the (empty) tmp cache
    assert not isolated_cache.exists()  # listing creates nothing


def test_data_check_prints_the_hygiene_report(tmp_path, capsys):
    rows = labelled_rows(4) + [labelled_rows(4)[0], {"input": labelled_rows(4)[1]["input"], "label": 1}]
    data = write_jsonl(tmp_path / "set.jsonl", rows)
    assert main(["data", "check", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "Data hygiene:" in out
    assert "rows: 10 (6 members, 4 non-members)" in out
    assert "1 among members, 0 among non-members" in out
    assert "texts labelled both member and non-member: 1 (2 rows)" in out
    assert "length in words:" in out and "remove these before splitting" in out


def test_data_check_reports_bad_data(tmp_path, capsys):
    data = write_jsonl(tmp_path / "set.jsonl", [{"input": "only members", "label": 1}])
    assert_error(capsys, main(["data", "check", "--data", str(data)]), "only members (label 1)")


def test_data_controlled_builds_a_set(tiny_model_dir, tmp_path, capsys):
    words = ("river stone cloud lamp garden window paper music winter orange quiet metal "
             "forest candle bridge silver market letter").split()
    docs = [" ".join(words[(d * 7 + i * 5) % len(words)] + str(d * 100 + i) for i in range(40))
            for d in range(3)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs), encoding="utf-8")
    out = tmp_path / "set"
    rc = main(["data", "controlled", "--model", str(tiny_model_dir), "--device", "cpu",
               "--corpus", str(corpus), "--out", str(out), "--n-per-class", "4",
               "--n-words", "8", "--epochs", "1", "--batch-size", "4", "--lr", "1e-3"])
    assert rc == 0, capsys.readouterr().err
    assert f"written to {out}" in capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["n_per_class"] == 4 and card["injection"]["epochs"] == 1
    assert card["injection"]["learning_rate"] == 1e-3 and card["train_steps"] == 1
    assert (out / "model").is_dir() and len((out / "data.jsonl").read_text().splitlines()) == 8


# ---------------------------------------------------------------- parsing only


def parse_scores(*extra):
    return scores_config(build_parser().parse_args(["scores", "--data", "d.jsonl", *extra]))


def test_scores_config_defaults():
    config = parse_scores()
    assert config.methods.methods == ["all"] and config.methods.k == 0.2
    assert config.methods.k_sweep == [] and config.methods.reference is None
    assert config.model.name == "smollm2-135m-instruct" and config.model.device == "auto"
    assert config.data.path == "d.jsonl" and config.data.text_column == "input"
    assert config.data.dedupe and not config.data.skip_invalid
    assert config.split.max_train_per_class == 80 and config.split.max_test_per_class == 100
    assert config.use_cache and config.cache_dir == str(default_cache_dir())
    assert config.out == "runs/latest"


def test_scores_config_k_sweep_and_methods_parsing():
    config = parse_scores("--methods", " loss, min-k%++ ,,zlib,", "--k", "0.3",
                          "--k-sweep", "0.1, 0.5,,1")
    assert config.methods.methods == ["loss", "min-k%++", "zlib"]
    assert config.methods.k == 0.3 and config.methods.k_sweep == [0.1, 0.5, 1.0]


def test_scores_config_maps_every_option(tmp_path):
    config = parse_scores(
        "--model", "m", "--gguf-file", "f.gguf", "--device", "cpu", "--dtype", "bfloat16",
        "--device-map", "auto", "--split", "s", "--text-column", "t", "--label-column", "y",
        "--skip-invalid", "--no-dedupe", "--seed", "7", "--train-per-class", "3",
        "--test-per-class", "4", "--cache-dir", str(tmp_path), "--reference", "r",
        "--num-neighbors", "2", "--neighbor-fraction", "0.5", "--neighbors-file", "n.jsonl",
        "--batch-size", "16", "--max-tokens", "64", "--no-cache", "--out", "o")
    assert (config.model.name, config.model.gguf_file, config.model.device, config.model.dtype,
            config.model.device_map) == ("m", "f.gguf", "cpu", "bfloat16", "auto")
    assert (config.data.split, config.data.text_column, config.data.label_column) == ("s", "t", "y")
    assert config.data.skip_invalid and not config.data.dedupe
    assert (config.split.seed, config.split.max_train_per_class, config.split.max_test_per_class) == (7, 3, 4)
    m = config.methods
    assert (m.reference, m.num_neighbors, m.neighbor_fraction, m.neighbors_file, m.batch_size,
            m.max_tokens) == ("r", 2, 0.5, "n.jsonl", 16, 64)
    assert not config.use_cache and config.cache_dir == str(tmp_path) and config.out == "o"
    json.dumps(config.to_dict())  # serialisable as the run's config.json


def test_scores_requires_data(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["scores"])
    assert exit_.value.code == 2 and "--data" in capsys.readouterr().err
