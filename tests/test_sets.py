"""Named benchmark sets (mia_tuner.sets): names, where a set is read from, bad names, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import labelled_rows, write_jsonl

from mia_tuner import sets
from mia_tuner.cli import main
from mia_tuner.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def local_root(tmp_path) -> Path:
    (tmp_path / "root" / "wikimia").mkdir(parents=True)
    write_jsonl(tmp_path / "root" / "wikimia" / "32.jsonl", labelled_rows(12))
    return tmp_path / "root"


def test_names_are_told_from_paths(tmp_path):
    assert sets.is_named("wikimia24:32") and sets.is_named("controlled:gemma-3-270m:600")
    assert not sets.is_named("data.jsonl") and not sets.is_named("wjfu99/WikiMIA-24")
    (tmp_path / "wikimia:32").mkdir()  # an existing path is a path, whatever it looks like
    assert not sets.is_named(str(tmp_path / "wikimia:32"))


def test_a_local_copy_is_preferred_and_the_hub_is_the_fallback(tmp_path, monkeypatch):
    root = local_root(tmp_path)
    assert sets.wikimia_config("wikimia", 32, root).path == str(root / "wikimia" / "32.jsonl")
    monkeypatch.delenv("MIA_TUNER_DATA", raising=False)
    hub = sets.wikimia_config("wikimia24", 64)
    assert (hub.path, hub.split) == ("wjfu99/WikiMIA-24", "WikiMIA_length64")
    monkeypatch.setenv("MIA_TUNER_DATA", str(root))
    named = sets.resolve("wikimia:32")
    assert (named.dataset, named.split, len(named.data.texts)) == ("wikimia", "32", 24)
    assert named.model is None and named.reference is None


@pytest.mark.parametrize("name,fragment", [("wikimia24:33", "one of 32, 64, 128, 256"),
                                           ("wikimia:abc", "one of 32"), ("controlled:", "offline model"),
                                           ("controlled:gemma-3-270m:many", "number of passages"),
                                           ("imdb:32", "unknown set name")])
def test_bad_names_are_refused(name, fragment):
    with pytest.raises(DataError, match=fragment):
        sets.resolve(name)


def test_scores_reads_a_named_set(tiny_model_dir, tmp_path, capsys):
    root = local_root(tmp_path)
    assert main(["scores", "--model", str(tiny_model_dir), "--data", "wikimia:32", "--data-root", str(root),
                 "--methods", "loss", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_texts"] > 0 and "loss" in metrics["methods"]


@pytest.mark.shared_data
def test_the_debiased_set_is_built_from_every_length():
    if not (SHARED / "wikimia24").exists():
        pytest.skip("no ../shared/data in this clone")
    named = sets.resolve("wikimia24:debiased", root=SHARED)
    assert named.split == sets.DEBIASED and named.data.n_member == named.data.n_nonmember > 100
    assert all(len(t.split()) <= 32 for t in named.data.texts)


def test_a_controlled_set_not_built_is_refused_rather_than_built_when_asked(tmp_path, monkeypatch):
    import mia_tuner.training.controlled as controlled

    def build(*args, **kwargs):
        raise AssertionError("built")

    monkeypatch.setattr(controlled, "build_controlled", build)
    with pytest.raises(DataError, match="not built yet"):
        sets.resolve("controlled:smollm2-135m-instruct:40", cache_dir=tmp_path, build=False)
    with pytest.raises(AssertionError, match="built"):  # the default builds it
        sets.resolve("controlled:smollm2-135m-instruct:40", cache_dir=tmp_path)


@pytest.mark.parametrize("name,recipe", [
    ("wikimia24:32", {"paper_split": True}), ("wikimia:128", {"paper_split": True}),
    ("wikimia24:debiased", {"group_by": "event", "train_fraction": 0.6}),
    ("controlled:gemma-3-270m", {"train_fraction": 0.6}),
    ("controlled:gemma-3-270m:600", {"test_per_class": 200}),
    ("smoke", {}), ("some/hub-id", {}), ("data.jsonl", {})])
def test_each_named_set_keeps_its_split_recipe(name, recipe):
    got = sets.split_recipe(name)
    assert {k: v for k, v in vars(got).items() if v is not None} == recipe


def test_a_suite_entry_overrides_the_recipe_field_by_field():
    from mia_tuner.suite.config import DatasetEntry

    entry = sets.split_recipe("wikimia24:debiased").fill(DatasetEntry(set="wikimia24:debiased", train_fraction=0.5))
    assert (entry.group_by, entry.train_fraction, entry.paper_split) == ("event", 0.5, None)


def test_a_controlled_set_has_one_spelling_the_model_first():
    with pytest.raises(DataError, match="name the model first"):
        sets.resolve("controlled:600")
    assert sets.is_named("controlled:gemma-3-270m:600")


def test_a_new_family_of_sets_is_one_registration(monkeypatch):
    from mia_tuner.data import registry

    monkeypatch.setattr(registry, "FAMILIES", dict(registry.FAMILIES))

    @registry.register_set("toy", "toy:<n>", lambda rest: registry.SplitRecipe(test_per_class=int(rest)))
    def _toy(rest, context):
        return registry.NamedSet(data=sets.smoke_set(), dataset="toy", split=rest)

    assert sets.is_named("toy:5") and sets.resolve("toy:5").split == "5"
    assert sets.split_recipe("toy:5").test_per_class == 5 and "toy:<n>" in sets.spellings()
