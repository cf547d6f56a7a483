"""`run_scores` end to end on the tiny random model: the run directory, method selection,
the score cache across runs, the evaluation split and truncation reporting."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import make_tiny_model_dir
from mia_tuner.config import DataConfig, MethodConfig, ModelConfig, RunConfig, SplitConfig
from mia_tuner.data.types import MembershipSet
from mia_tuner.errors import MethodError
from mia_tuner.methods import METHODS, available_methods
from mia_tuner.reports import safe_filename
from mia_tuner.suite import run_scores

N_PER_CLASS = 20
SPLIT = SplitConfig(max_train_per_class=8, max_test_per_class=6)
# 20 per class, train_fraction 0.8: 16 train / 4 test per class; the caps keep 8 train, 4 test.
# the split fills the test part first when a class holds enough texts for both caps
N_TEST = 2 * (SPLIT.max_test_per_class if N_PER_CLASS >= SPLIT.max_train_per_class + SPLIT.max_test_per_class
              else min(SPLIT.max_test_per_class, N_PER_CLASS - round(N_PER_CLASS * SPLIT.train_fraction)))
N_TRAIN = 2 * SPLIT.max_train_per_class
ALL_BUT_REF = [m for m in available_methods() if not METHODS[m].needs_reference]  # need a reference
COLOURS = ["red", "green", "blue", "black", "white"]


def member_text(i: int) -> str:
    return f"The cat number {i} sat on the {COLOURS[i % 5]} mat and looked at the dog."


def nonmember_text(i: int) -> str:
    return f"A bird called {i} flew over the {COLOURS[i % 5]} park near the river."


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """40 distinct short texts (20 members, 20 non-members) plus one exact duplicate of each
    class, so deduplication has something to remove."""
    rows = []
    for i in range(N_PER_CLASS):
        rows += [{"input": member_text(i), "label": 1}, {"input": nonmember_text(i), "label": 0}]
    rows += [{"input": member_text(3), "label": 1}, {"input": nonmember_text(5), "label": 0}]
    return write_jsonl(tmp_path_factory.mktemp("data") / "set.jsonl", rows)


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    """A second tiny model: same architecture and tokenizer, different random weights."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-reference"), seed=1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def make_config(model_dir, data_file, out, cache_dir, **method_options) -> RunConfig:
    return RunConfig(model=ModelConfig(name=str(model_dir), device="cpu"),
                     data=DataConfig(path=str(data_file)), split=SPLIT,
                     methods=MethodConfig(**{"methods": ["all"], **method_options}),
                     out=str(out), cache_dir=str(cache_dir))


def read_metrics(out_dir) -> dict:
    return json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, reference_dir, data_file, cache_dir, tmp_path_factory):
    """Every method, `ref` against the second tiny model, on a fresh score cache."""
    config = make_config(tiny_model_dir, data_file, tmp_path_factory.mktemp("runs") / "full",
                         cache_dir, reference=str(reference_dir))
    return config, run_scores(config)


# ---------------------------------------------------------------- the run directory


def test_run_directory_holds_every_artefact(full_run):
    config, result = full_run
    out = result.out_dir
    assert out.resolve() == Path(config.out).resolve()
    for name in ("config.json", "scores.csv", "metrics.json", "table.md", "roc.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    hists = sorted(p.name for p in out.glob("hist_*.png"))
    assert len(hists) == len(available_methods())
    assert hists == sorted(f"hist_{safe_filename(m)}.png" for m in available_methods())


def test_config_json_is_the_resolved_config(full_run):
    config, result = full_run
    written = json.loads((result.out_dir / "config.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(config.to_dict()))
    assert written["methods"]["reference"] == config.methods.reference
    assert written["split"]["max_test_per_class"] == SPLIT.max_test_per_class


def test_scores_csv_has_one_row_per_test_text(full_run):
    _, result = full_run
    frame = pd.read_csv(result.out_dir / "scores.csv")
    assert len(frame) == len(result.test) == N_TEST
    assert list(frame["text"]) == list(result.test.texts)
    assert list(frame["label"]) == list(result.test.labels)
    assert set(available_methods()) <= set(frame.columns)
    for method in available_methods():
        np.testing.assert_allclose(frame[method].to_numpy(), result.scores[method], rtol=1e-6)
        assert np.isfinite(result.scores[method]).all(), method


def test_every_requested_method_is_in_metrics_json(full_run):
    _, result = full_run
    metrics = read_metrics(result.out_dir)
    assert metrics["n_texts"] == N_TEST
    assert set(metrics["methods"]) == set(available_methods())
    assert set(result.metrics) == set(available_methods())
    for method, row in metrics["methods"].items():
        assert 0.0 <= row["auroc"] <= 1.0, method
    info = metrics["extra"]["methods"]
    assert set(info) == set(available_methods())
    # A fresh cache: every test text is computed once per method, nothing read back.
    assert all(info[m]["computed"] == N_TEST and info[m]["cached"] == 0 for m in info), info
    assert metrics["extra"]["model"]["fingerprint"]
    assert metrics["extra"]["split"]["test"] == {"member": N_TEST // 2, "nonmember": N_TEST // 2}
    assert metrics["extra"]["truncated_texts"] == 0


def test_table_lists_every_method(full_run):
    _, result = full_run
    table_md = (result.out_dir / "table.md").read_text(encoding="utf-8")
    for method in available_methods():
        assert method in result.table and f"| {method} |" in table_md, method


def test_ref_uses_the_reference_model(full_run, reference_dir):
    _, result = full_run
    settings = read_metrics(result.out_dir)["extra"]["methods"]["ref"]["settings"]
    fingerprint = read_metrics(result.out_dir)["extra"]["model"]["fingerprint"]
    assert settings["reference"] and settings["reference"] != fingerprint


# ---------------------------------------------------------------- the evaluation split


def test_test_texts_never_appear_in_the_train_part(full_run):
    _, result = full_run
    assert len(result.train) == N_TRAIN and result.train.n_member == result.train.n_nonmember
    assert result.test.n_member == result.test.n_nonmember == N_TEST // 2
    assert not set(result.test.texts) & set(result.train.texts)
    assert len(set(result.test.texts)) == len(result.test)  # the duplicates were removed
    split = read_metrics(result.out_dir)["extra"]["split"]
    assert split["n_input"] == 2 * N_PER_CLASS + 2
    assert split["duplicates_removed"]["duplicate_rows"] == 2


# ---------------------------------------------------------------- the score cache


def test_rerun_with_the_same_cache_computes_nothing(full_run, tmp_path):
    config, first = full_run
    again = run_scores(replace(config, out=str(tmp_path / "again")))
    info = read_metrics(again.out_dir)["extra"]["methods"]
    assert set(info) == set(available_methods())
    assert all(row["computed"] == 0 and row["cached"] == N_TEST for row in info.values()), info
    for method in available_methods():
        np.testing.assert_allclose(again.scores[method], first.scores[method])
    assert list(again.test.texts) == list(first.test.texts)


def test_all_without_reference_leaves_ref_out(full_run, tiny_model_dir, data_file, cache_dir,
                                             tmp_path):
    # Same cache as the full run: every remaining method is read back, nothing computed.
    config = make_config(tiny_model_dir, data_file, tmp_path / "noref", cache_dir)
    result = run_scores(config)
    metrics = read_metrics(result.out_dir)
    assert set(result.scores) == set(metrics["methods"]) == set(ALL_BUT_REF)
    assert "ref" not in pd.read_csv(result.out_dir / "scores.csv").columns
    assert not (result.out_dir / "hist_ref.png").exists()
    assert all(row["computed"] == 0 for row in metrics["extra"]["methods"].values())


def test_no_cache_neither_reads_nor_writes(tiny_model_dir, data_file, tmp_path):
    config = replace(make_config(tiny_model_dir, data_file, tmp_path / "run", tmp_path / "cache",
                                 methods=["loss"]), use_cache=False)
    for _ in range(2):
        result = run_scores(config)
        assert read_metrics(result.out_dir)["extra"]["methods"]["loss"]["computed"] == N_TEST
    assert not (tmp_path / "cache" / "scores.sqlite").exists()


# ---------------------------------------------------------------- method selection


def test_ref_without_reference_raises(tiny_model_dir, data_file, tmp_path):
    config = make_config(tiny_model_dir, data_file, tmp_path / "run", tmp_path / "cache",
                         methods=["ref"])
    with pytest.raises(MethodError, match="reference"):
        run_scores(config)
    assert not (tmp_path / "run").exists()


def test_unknown_method_raises_before_anything_is_written(tiny_model_dir, data_file, tmp_path):
    config = make_config(tiny_model_dir, data_file, tmp_path / "run", tmp_path / "cache",
                         methods=["loss", "no-such-method"])
    with pytest.raises(MethodError, match="no-such-method"):
        run_scores(config)
    assert not (tmp_path / "run").exists()


def test_k_sweep_adds_labelled_rows(tiny_model_dir, data_file, tmp_path):
    config = make_config(tiny_model_dir, data_file, tmp_path / "run", tmp_path / "cache",
                         methods=["min-k%"], k=0.2, k_sweep=[0.2, 0.5])
    result = run_scores(config)
    assert list(result.scores) == ["min-k%", "min-k% (k=0.5)"]
    assert set(read_metrics(result.out_dir)["methods"]) == {"min-k%", "min-k% (k=0.5)"}


def test_data_argument_replaces_the_configured_path(tiny_model_dir, tmp_path):
    data = MembershipSet(texts=[member_text(i) for i in range(10)]
                         + [nonmember_text(i) for i in range(10)],
                         labels=[1] * 10 + [0] * 10, name="in-memory")
    config = make_config(tiny_model_dir, "", tmp_path / "run", tmp_path / "cache",
                         methods=["loss"])
    result = run_scores(config, data=data)
    assert len(result.test) == 4 and read_metrics(result.out_dir)["extra"]["data"]["name"] == "in-memory"


# ---------------------------------------------------------------- truncation


def test_truncation_is_reported(tiny_model_dir, data_file, tmp_path):
    config = make_config(tiny_model_dir, data_file, tmp_path / "run", tmp_path / "cache",
                         methods=["loss"], max_tokens=4)
    result = run_scores(config)
    metrics = read_metrics(result.out_dir)
    assert metrics["extra"]["truncated_texts"] == N_TEST  # every test text is > 4 tokens
    assert metrics["extra"]["methods"]["loss"]["settings"]["max_tokens"] == 4
    assert json.loads((result.out_dir / "config.json").read_text())["methods"]["max_tokens"] == 4


def test_truncation_counts_test_texts_whatever_the_methods_and_cache(tiny_model_dir, data_file,
                                                                     tmp_path):
    config = make_config(tiny_model_dir, data_file, tmp_path / "run", tmp_path / "cache",
                         methods=["loss", "lowercase"], max_tokens=4)
    counts = [read_metrics(run_scores(config).out_dir)["extra"]["truncated_texts"] for _ in range(2)]
    assert counts == [N_TEST, N_TEST]


# ---------------------------------------------------------------- two processes

_SCORE_SCRIPT = """
import sys
from mia_tuner.config import DataConfig, MethodConfig, ModelConfig, RunConfig, SplitConfig
from mia_tuner.suite import run_scores

model, data, out, cache = sys.argv[1:5]
run_scores(RunConfig(model=ModelConfig(name=model, device="cpu"), data=DataConfig(path=data),
                     split=SplitConfig(max_train_per_class=6, max_test_per_class=9),
                     methods=MethodConfig(methods=["loss", "zlib", "min-k%++", "recall", "fused", "blind"],
                                          batch_size=2, recall_shots=2),
                     out=out, cache_dir=cache))
"""


def test_two_processes_score_exactly_as_one(tiny_model_dir, data_file, tmp_path):
    """torchrun with 2 CPU processes: each scores every other batch, the scores are gathered
    in the texts' order, one process writes the run directory: the same scores as one process."""
    import os
    import shutil
    import sys
    import textwrap

    from test_tuner import free_port, run_group

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed next to the interpreter")
    script = tmp_path / "score_script.py"
    script.write_text(textwrap.dedent(_SCORE_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for argv in ([sys.executable, str(script)],
                 [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), str(script)]):
        name = "one" if len(argv) == 2 else "two"
        returncode, stderr = run_group([*argv, str(tiny_model_dir), str(data_file), str(tmp_path / name),
                                        str(tmp_path / f"cache-{name}")], env, timeout=300)
        assert returncode == 0, stderr[-3000:]
    one, two = (pd.read_csv(tmp_path / name / "scores.csv") for name in ("one", "two"))
    assert list(one.columns) == list(two.columns) and len(one) == 18
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    info = json.loads((tmp_path / "two" / "metrics.json").read_text())["extra"]["methods"]
    assert info["loss"]["processes"] == 2 and info["loss"]["computed"] == 18  # every text once, over both
