"""Controlled-membership sets: the random member/non-member draw, the build on the tiny model
(members injected by continued pre-training) and the demo's cache of built sets."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import mia_tuner.demo as demo
import mia_tuner.models as models
import mia_tuner.training.controlled as controlled
from mia_tuner.data import load_corpus, load_membership_set
from mia_tuner.training.controlled import (CARD_FILE, DATA_FILE, MODEL_DIR, ControlledConfig,
                                       build_controlled, corpus_passages, is_built,
                                       random_membership)
from mia_tuner.errors import DataError
from mia_tuner.models import load_model

N_PER_CLASS = 6
N_WORDS = 8
VOCAB = ("river stone cloud lamp garden window paper music winter orange quiet metal forest "
         "candle bridge silver market letter harbour meadow lantern violin copper thunder").split()


def write_corpus(path, n_docs: int = 4, words_per_doc: int = 36, seed: int = 0):
    """A .txt corpus of blank-line separated documents of random words (no repeated passage)."""
    rng = np.random.default_rng(seed)
    docs = [" ".join(rng.choice(VOCAB, size=words_per_doc)) for _ in range(n_docs)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module")
def config(corpus):
    return ControlledConfig(corpus=str(corpus), n_words=N_WORDS, n_per_class=N_PER_CLASS,
                            injection={"epochs": 1, "batch_size": 4})


@pytest.fixture(scope="module")
def built(tiny_model_dir, config, tmp_path_factory):
    out = tmp_path_factory.mktemp("controlled") / "set"
    assert not is_built(out)
    return build_controlled(str(tiny_model_dir), out, config, device="cpu")


# ---------------------------------------------------------------- random_membership


PASSAGES = [f"passage number {i} of the corpus" for i in range(30)]


def test_random_membership_sizes_and_labels():
    ms = random_membership(PASSAGES, 5, seed=0)
    assert len(ms) == 10 and ms.n_member == 5 and ms.n_nonmember == 5
    assert list(ms.labels) == [1] * 5 + [0] * 5
    assert len(set(ms.texts)) == 10 and set(ms.texts) <= set(PASSAGES)
    assert ms.name == "controlled"


def test_random_membership_is_deterministic_per_seed():
    first = random_membership(PASSAGES, 5, seed=3)
    assert random_membership(PASSAGES, 5, seed=3) == first
    others = {random_membership(PASSAGES, 5, seed=s).texts for s in range(4, 8)}
    assert first.texts not in others and len(others) > 1


def test_random_membership_draws_at_random_not_in_corpus_order():
    ms = random_membership(PASSAGES, 5, seed=0)
    assert list(ms.texts) != PASSAGES[:10]


def test_random_membership_uses_distinct_passages_only():
    passages = ["a b c", "a b c", "d e f", "g h i", "j k l", "j k l"]
    ms = random_membership(passages, 2, seed=0)
    assert len(set(ms.texts)) == 4 == len(ms)
    with pytest.raises(DataError, match=r"4 distinct passages; 6 are needed for 3 per class"):
        random_membership(passages, 3, seed=0)


def test_random_membership_too_small_corpus():
    with pytest.raises(DataError, match="30 distinct passages; 32 are needed"):
        random_membership(PASSAGES, 16, seed=0)


# ---------------------------------------------------------------- build_controlled


def test_build_writes_model_data_and_card(built):
    assert (built / MODEL_DIR).is_dir()
    assert (built / MODEL_DIR / "config.json").is_file()
    assert (built / MODEL_DIR / "model.safetensors").is_file()
    assert (built / MODEL_DIR / "tokenizer.json").is_file()
    assert (built / DATA_FILE).is_file() and (built / CARD_FILE).is_file()
    assert is_built(built)


def test_data_jsonl_holds_the_labelled_passages(built, config):
    rows = [json.loads(line) for line in (built / DATA_FILE).read_text("utf-8").splitlines()]
    assert len(rows) == 2 * N_PER_CLASS
    assert sorted(r["label"] for r in rows) == [0] * N_PER_CLASS + [1] * N_PER_CLASS
    assert all(len(r["input"].split()) == N_WORDS for r in rows)
    assert len({r["input"] for r in rows}) == len(rows)
    passages = load_corpus(config.corpus, n_words=N_WORDS)
    assert {r["input"] for r in rows} <= set(passages)
    # The same draw as random_membership under the config's seed, and readable as a data set.
    expected = random_membership(corpus_passages(config), N_PER_CLASS, config.seed)
    loaded = load_membership_set(str(built / DATA_FILE))
    assert loaded.texts == expected.texts and loaded.labels == expected.labels


def test_card_records_the_build(built, config, tiny_model_dir):
    card = json.loads((built / CARD_FILE).read_text("utf-8"))
    assert card["base_model"] == str(tiny_model_dir)
    assert card["base_fingerprint"] == load_model(str(tiny_model_dir)).fingerprint
    assert card["config"]["corpus"] == config.corpus and card["config"]["n_words"] == N_WORDS
    assert card["n_member"] == card["n_nonmember"] == N_PER_CLASS
    assert card["injection"]["epochs"] == 1 and card["injection"]["batch_size"] == 4
    assert card["injection"]["seed"] == config.seed
    assert card["train_steps"] == 2  # 6 members, batches of 4, one epoch
    assert np.isfinite(card["first_loss"]) and np.isfinite(card["last_epoch_loss"])


def test_a_damaged_set_is_refused(built, tmp_path):
    import shutil

    from mia_tuner.training.controlled import check_built
    from mia_tuner.errors import ArtefactError

    copy = tmp_path / "set"
    shutil.copytree(built, copy)
    check_built(copy)  # intact (copytree keeps mtimes; sizes and hashes match)
    with (copy / DATA_FILE).open("a", encoding="utf-8") as handle:
        handle.write('{"input": "an extra member", "label": 1}\n')
    (copy / MODEL_DIR / "config.json").unlink()
    with pytest.raises(ArtefactError, match="data.jsonl was changed.*model/config.json is missing"):
        check_built(copy)


def test_injected_model_loads_and_differs_from_the_base(built, tiny_model_dir):
    injected = load_model(str(built / MODEL_DIR))
    base = load_model(str(tiny_model_dir))
    assert injected.fingerprint != base.fingerprint
    card = json.loads((built / CARD_FILE).read_text("utf-8"))
    assert card["base_fingerprint"] == base.fingerprint
    assert injected.tokenizer("a cloud over the river")["input_ids"] == \
        base.tokenizer("a cloud over the river")["input_ids"]


def test_is_built_needs_the_card(tmp_path):
    assert not is_built(tmp_path / "missing")
    partial = tmp_path / "partial"
    (partial / MODEL_DIR).mkdir(parents=True)
    (partial / DATA_FILE).write_text("")
    assert not is_built(partial)  # an interrupted build (no card yet) is not a set
    (partial / CARD_FILE).write_text("{}")
    assert is_built(partial)


def test_build_fails_cleanly_on_a_too_small_corpus(tiny_model_dir, tmp_path):
    small = write_corpus(tmp_path / "small.txt", n_docs=1, words_per_doc=3 * N_WORDS)
    config = ControlledConfig(corpus=str(small), n_words=N_WORDS, n_per_class=N_PER_CLASS)
    with pytest.raises(DataError, match="3 distinct passages"):
        build_controlled(str(tiny_model_dir), tmp_path / "out", config, device="cpu")
    assert not is_built(tmp_path / "out")


# ---------------------------------------------------------------- demo helpers


def test_controlled_dir_is_keyed_by_model_and_every_setting(config, tmp_path):
    base = controlled.controlled_dir("smollm2-135m-instruct", config, tmp_path)
    assert base == controlled.controlled_dir("smollm2-135m-instruct", replace(config), tmp_path)
    assert base.parent == tmp_path / "controlled"
    assert base.name.startswith("smollm2-135m-instruct-")
    variants = [
        controlled.controlled_dir("gemma-3-270m", config, tmp_path),
        controlled.controlled_dir("smollm2-135m-instruct", replace(config, n_words=16), tmp_path),
        controlled.controlled_dir("smollm2-135m-instruct", replace(config, n_per_class=7), tmp_path),
        controlled.controlled_dir("smollm2-135m-instruct", replace(config, seed=1), tmp_path),
        controlled.controlled_dir("smollm2-135m-instruct", replace(config, corpus="python-docs"), tmp_path),
        controlled.controlled_dir("smollm2-135m-instruct",
                            replace(config, injection={"epochs": 2, "batch_size": 4}), tmp_path),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_controlled_dir_of_a_path_like_model_is_one_folder(config, tmp_path):
    folder = controlled.controlled_dir("org/some-model", config, tmp_path)
    assert folder.parent == tmp_path / "controlled" and folder.name.startswith("org_some-model-")


def test_ensure_controlled_builds_once(config, tmp_path, monkeypatch):
    calls = []

    def fake_build(model, out, cfg, device="auto", cache_dir=None):
        calls.append((model, out, cfg, device))
        out.mkdir(parents=True)
        (out / CARD_FILE).write_text("{}")
        return out

    monkeypatch.setattr(controlled, "build_controlled", fake_build)
    first = controlled.ensure_controlled("some-model", config, tmp_path, device="cpu")
    second = controlled.ensure_controlled("some-model", config, tmp_path, device="cpu")
    assert first == second == controlled.controlled_dir("some-model", config, tmp_path)
    assert len(calls) == 1 and calls[0][2] == config and calls[0][3] == "cpu"


def test_demo_is_a_one_cell_suite_on_the_controlled_set_with_the_runs_recorded_settings():
    """One cell: the injected model scored against the model before injection (the set
    brings both), split by the set's recipe; demo_identity's settings are the cell's."""
    from mia_tuner.suite.runner import cells

    (cell,) = cells(demo.demo_suite(device="cpu"))
    assert cell.set_name == "controlled:smollm2-135m-instruct" and cell.run.model.device == "cpu"
    assert cell.run.methods.reference is None  # the controlled set brings the model before injection
    assert cell.run.split == demo.DEMO_SPLIT
    assert [v.config(cell.train_per_class, cell.seed) for v in cell.tuner] == [demo.DEMO_TUNER]
    assert cell.run.methods == demo.demo_run_methods()


class _Stop(Exception):
    pass


def test_ensure_controlled_loads_the_base_model_from_the_given_cache(config, tmp_path, monkeypatch):
    seen = {}

    def fake_load(model_config, cache_dir=None):
        seen["cache_dir"] = cache_dir
        raise _Stop

    monkeypatch.setattr(models, "load_model", fake_load)
    with pytest.raises(_Stop):
        controlled.ensure_controlled("smollm2-135m-instruct", config, tmp_path / "cache", device="cpu")
    assert seen["cache_dir"] is not None and str(seen["cache_dir"]) == str(tmp_path / "cache")


# ---------------------------------------------------------------- the demo's MIA-Tuner row


def test_demo_methods_leave_neighbor_out_of_the_table_and_of_fused():
    from mia_tuner.methods import build_methods

    methods = demo.demo_methods(("neighbor",))
    assert "neighbor" not in methods.methods and {"fused", "fused+ref", "recall"} <= set(methods.methods)
    fused = [m for m in build_methods(["fused"], methods)][0]
    assert "neighbor" not in [m.name for m in fused.base_methods()] and not fused.needs_topk
    assert demo.demo_methods().fused_features == []  # nothing left out: every feature


def test_demo_trains_mia_tuner_once_then_reads_its_scores_from_the_cache(built, tmp_path, monkeypatch):
    """First run: trained on the split's training part; a run into another folder: the same
    scores, from the detector filed in the cache, without training; a re-run into the first
    folder reads its records and loads no model; a detector whose files changed is refused."""
    from mia_tuner.errors import ArtefactError
    from mia_tuner.suite.config import DatasetEntry, SuiteConfig, TunerVariant
    from mia_tuner.suite.single import run_single_cell
    from mia_tuner.tuner import api

    methods = demo.demo_methods(("neighbor", "recall", "con-recall", "ref", "fused", "fused+ref"))
    suite = SuiteConfig(name="demo-test", models=[str(built / MODEL_DIR)],
                        datasets=[DatasetEntry(set=str(built / DATA_FILE), train_fraction=0.6)],
                        methods=methods.methods, method_settings={"fused_features": methods.fused_features},
                        reference=str(built / MODEL_DIR), train_per_class=[4], device="cpu",
                        tuner=[TunerVariant(settings={"epochs": 1, "num_virtual_tokens": 2,
                                                      "validation_per_class": 1, "batch_per_class": 2})])

    def run(folder):
        return run_single_cell(suite, tmp_path / folder, cache_dir=tmp_path / "cache")

    first = run("first")
    (saved,) = (tmp_path / "cache" / "detectors").glob("*/detector")
    assert "mia-tuner" in first.metrics and (saved / "detector.json").is_file()
    assert len(first.scores["mia-tuner"]) == len(first.test)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(api, "train_detector", no_training)
    second = run("second")
    np.testing.assert_array_equal(second.scores["mia-tuner"], first.scores["mia-tuner"])

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", no_model)
    again = run("first")
    for name, scores in first.scores.items():
        np.testing.assert_array_equal(again.scores[name], scores)
    monkeypatch.undo()
    weights = next(p for p in saved.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ArtefactError):
        run("third")
