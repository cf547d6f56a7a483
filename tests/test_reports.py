"""Run directories, tables and plots from per-method scores."""

import json

import numpy as np
import pandas as pd
import pytest

from mia_tuner.metrics import Metrics, compute_metrics
from mia_tuner.reports import (
    metrics_table,
    plot_histograms,
    plot_roc,
    safe_filename,
    TABLE_NOTE,
    table_markdown,
    table_text,
    write_run,
)


def _toy(n_per_class=30, seed=0):
    """Texts, labels and three methods' scores (good, weak, reversed)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_per_class, int), np.zeros(n_per_class, int)]
    texts = [f"text {i}, with \"quotes\"\nand a newline" for i in range(labels.size)]
    scores = {
        "loss": rng.normal(size=labels.size) + 1.5 * labels,
        "min-k%++": rng.normal(size=labels.size) + 0.4 * labels,
        "zlib|ratio": rng.normal(size=labels.size) - 1.0 * labels,
    }
    return texts, labels, scores


def _metrics(labels, scores):
    return {name: compute_metrics(labels, s, n_bootstrap=100) for name, s in scores.items()}


@pytest.mark.parametrize("name, expected", [
    ("min-k%++", "min-k_pp"),
    ("min-k%", "min-k"),
    ("loss", "loss"),
    ("zlib/ratio", "zlib_ratio"),
    ("ref (pythia-70m)", "ref_pythia-70m"),
    ("a  b", "a_b"),
    ("../etc", "etc"),
    ("%%%", "method"),
    ("", "method"),
])
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected


def test_metrics_table_order_and_columns():
    texts, labels, scores = _toy()
    df = metrics_table(_metrics(labels, scores))
    assert list(df["method"]) == ["loss", "min-k%++", "zlib|ratio"]
    assert {"AUROC", "AUROC low", "AUROC high", "TPR@0.1%FPR", "TPR@1%FPR", "TPR@5%FPR",
            "TPR@10%FPR", "FPR@95%TPR", "Bal. acc*"} <= set(df.columns)
    assert df.loc[0, "AUROC"] > df.loc[2, "AUROC"]


def test_table_markdown_shape_and_format():
    m = Metrics(auroc=0.7123, auroc_low=0.64, auroc_high=0.78123,
                tpr_at_fpr={0.001: 0.0, 0.01: 0.02, 0.05: 0.1, 0.1: 0.25},
                fpr_at_95_tpr=0.6, balanced_accuracy=0.66, threshold=1.0, n_member=5, n_nonmember=5)
    md = table_markdown(metrics_table({"a": m, "b|c": m}))
    lines = md.strip().splitlines()
    assert len(lines) == 2 + 2  # header, separator, one row per method
    assert lines[0].startswith("| method | AUROC [95% CI] |")
    assert set(lines[1]) <= set("|:-")
    assert "0.712 [0.640, 0.781]" in lines[2]
    assert "b\\|c" in lines[3]  # a pipe in a name does not break the table
    assert all(line.count(" | ") == lines[0].count(" | ") for line in lines[2:])


def test_table_markdown_without_interval():
    m = compute_metrics([1, 1, 0, 0], [4, 3, 2, 1], n_bootstrap=0)
    md = table_markdown(metrics_table({"x": m}))
    assert "| x | 1.000 |" in md


def test_table_text_aligned():
    texts, labels, scores = _toy()
    text = table_text(metrics_table(_metrics(labels, scores)))
    lines = text.rstrip("\n").splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].startswith("method")
    assert len({len(line) for line in lines}) == 1  # every line ends at the same column


def test_write_run_creates_everything(tmp_path):
    texts, labels, scores = _toy()
    metrics = _metrics(labels, scores)
    config = {"model": {"name": "toy"}, "seed": 3, "path": tmp_path}
    out = write_run(tmp_path / "run" / "nested", config=config, texts=texts, labels=labels,
                    scores=scores, metrics=metrics, extra={"loss": {"seconds": 1.5}})
    expected = {"config.json", "scores.csv", "metrics.json", "table.md", "roc.png",
                "hist_loss.png", "hist_min-k_pp.png", "hist_zlib_ratio.png"}
    assert expected <= {p.name for p in out.iterdir()}
    for name in expected:
        assert (out / name).stat().st_size > 0
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    config_back = json.loads((out / "config.json").read_text())
    assert config_back["model"] == {"name": "toy"} and config_back["path"] == str(tmp_path)

    data = json.loads((out / "metrics.json").read_text())
    assert data["n_texts"] == len(texts)
    assert data["extra"] == {"loss": {"seconds": 1.5}}
    assert list(data["methods"]) == list(scores)
    for name, m in metrics.items():
        assert data["methods"][name] == m.to_dict()
        assert Metrics.from_dict(data["methods"][name]) == m

    frame = pd.read_csv(out / "scores.csv")
    assert list(frame.columns) == ["index", "label", "text", *scores]
    assert len(frame) == len(texts)
    assert list(frame["text"]) == texts
    np.testing.assert_array_equal(frame["label"], labels)
    np.testing.assert_allclose(frame["min-k%++"], scores["min-k%++"])

    md = (out / "table.md").read_text().strip().splitlines()
    assert len([line for line in md if line.startswith("|")]) == 2 + len(scores)
    assert md[-1] == TABLE_NOTE  # the balanced-accuracy column says its threshold is test-picked


def test_write_run_rejects_bad_inputs(tmp_path):
    texts, labels, scores = _toy()
    with pytest.raises(ValueError, match="has 3 scores"):
        write_run(tmp_path, config={}, texts=texts, labels=labels,
                  scores={"loss": np.zeros(3)}, metrics={})
    with pytest.raises(ValueError, match="clashes"):
        write_run(tmp_path, config={}, texts=texts, labels=labels,
                  scores={"label": scores["loss"]}, metrics={})


def test_histograms_distinct_files_for_colliding_names(tmp_path):
    texts, labels, scores = _toy()
    paths = plot_histograms(labels, {"a/b": scores["loss"], "a_b": scores["loss"]}, tmp_path)
    assert [p.name for p in paths] == ["hist_a_b.png", "hist_a_b_2.png"]


def test_plot_roc_rejects_nan(tmp_path):
    texts, labels, scores = _toy()
    bad = scores["loss"].copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        plot_roc(labels, {"loss": bad}, tmp_path / "roc.png")
