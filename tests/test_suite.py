"""Suites: configuration, the runner (resumable, incremental), the report's tables."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from helpers import make_tiny_model_dir

from mia_tuner.cli import main
from mia_tuner.errors import ArtefactError, ConfigError, MethodError
from mia_tuner.suite import SHIPPED, benchmark, cells, load_suite, suite_from_dict
from mia_tuner.suite import runner as runner_module
from mia_tuner.suite.store import CellStore
from mia_tuner.suite.tables import Entry, build_tables, clear_winner, column_order

MINIMAL = {"name": "t", "models": ["m"], "datasets": ["smoke"]}


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_suite_reads_into_the_dataclasses(name):
    suite = load_suite(name)
    assert suite.name == name and suite.models and suite.datasets
    assert cells(suite)  # the matrix is not empty


def test_the_matrix_is_models_x_datasets_x_seeds_x_sizes():
    suite = suite_from_dict({**MINIMAL, "models": ["a", "b"], "datasets": ["smoke", "controlled:{model}"],
                             "seeds": [1, 2, 3], "train_per_class": [10, 20]})
    grid = cells(suite)
    assert len(grid) == 2 * 2 * 3 * 2
    assert {c.set_name for c in grid if c.model == "b"} == {"smoke", "controlled:b"}
    assert [c.model for c in grid[:12]] == ["a"] * 12  # a model's cells run together


@pytest.mark.parametrize("values, message", [
    ({**MINIMAL, "modles": ["x"]}, "unknown key(s) ['modles']"),
    ({**MINIMAL, "method_settings": {"kk": 0.2}}, "method_settings: unknown key(s) ['kk']"),
    ({**MINIMAL, "tuner": [{"tag": "x", "learning_rat": 1}]}, "tuner[]: unknown key(s) ['learning_rat']"),
    ({**MINIMAL, "tuner": [{"tag": "x", "seed": 1}]}, "`seed` is a suite axis"),
    ({**MINIMAL, "tuner": [{"tag": "x"}, {"tag": "x"}]}, "share a tag"),
    ({**MINIMAL, "safeguards": [{"against": "everything"}]}, "against"),
    ({**MINIMAL, "datasets": [{"split": "x"}]}, "needs `set`"),
    ({**MINIMAL, "models": []}, "`models` is empty"),
    ({**MINIMAL, "seeds": 3}, "`seeds` must be a list"),
    ({"models": ["m"], "datasets": ["smoke"]}, "`name` is missing"),
    ({**MINIMAL, "test_per_class": 0}, "must be positive"),
    ({**MINIMAL, "methods": ["loss", "lossy"]}, "unknown method(s) ['lossy']"),
    ({**MINIMAL, "dtype": "float33"}, "dtype 'float33'"),
    ({**MINIMAL, "safeguards": [{"against": "scores", "datasets": ["smok"]}]}, "names ['smok'], not among"),
    ({**MINIMAL, "tuner": [{"tag": "x", "datasets": "smoke"}]}, "`datasets` is a non-empty list"),
])
def test_a_wrong_suite_is_refused_before_anything_runs(values, message):
    with pytest.raises((ConfigError, ValueError)) as info:
        suite_from_dict(values)
    assert message in str(info.value)


def test_a_suite_file_that_is_not_yaml_or_not_a_mapping_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(str(bad))
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_suite(str(bad))
    with pytest.raises(ConfigError, match="no suite 'nope'"):
        load_suite("nope")


def test_overrides_replace_the_suites_top_level_keys():
    suite = load_suite("smoke", {"seeds": [7], "models": ["x"], "test_per_class": None})
    assert suite.seeds == [7] and suite.models == ["x"] and suite.test_per_class == 10


# ------------------------------------------------------------------ tables (hand-made records)


def _records(scores_by_method: dict, labels, seeds=(1,), mode="base", dataset="d", n=5):
    records = []
    for seed in seeds:
        key = f"cell-{seed}"
        records.append({"kind": "cell", "cell_key": key, "model": "m", "dataset": dataset, "seed": seed,
                        "train_per_class": n, "labels": list(labels), "mode": mode, "n_test": len(labels)})
        for method, scores in scores_by_method.items():
            records.append({"kind": "method", "cell_key": key, "model": "m", "dataset": dataset, "seed": seed,
                            "train_per_class": n, "method": method, "scores": list(scores)})
    return records


def test_a_clear_winner_is_marked_and_a_tie_is_not():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 40 + [0] * 40)
    perfect = labels + 0.01 * rng.normal(size=80)
    noise = rng.normal(size=80)
    table = build_tables(_records({"a": perfect, "b": noise, "blind": labels * 2.0}, labels))[0]
    assert table.best[("base", "m")] == "a"  # blind is perfect too but never competes
    tie = build_tables(_records({"a": perfect, "b": perfect + 1e-9, "blind": noise}, labels))[0]
    assert tie.best[("base", "m")] is None


def test_the_winner_must_clear_the_next_best_on_every_seed():
    labels = np.array([1] * 30 + [0] * 30)
    rng = np.random.default_rng(1)
    strong = labels + 0.05 * rng.normal(size=60)
    row = {"a": Entry(aurocs=[1.0, 0.9], scores={1: strong, 2: strong}),
           "b": Entry(aurocs=[0.5, 0.5], scores={1: rng.normal(size=60), 2: strong - 1e-9})}
    assert clear_winner(row, {1: labels, 2: labels}) is None  # seed 2: a and b are the same
    row["b"].scores[2] = rng.normal(size=60)
    assert clear_winner(row, {1: labels, 2: labels}) == "a"


def test_several_seeds_give_mean_and_spread():
    labels = np.array([1, 1, 0, 0])
    records = _records({"a": [4, 3, 2, 1]}, labels, seeds=(1,)) + \
        _records({"a": [2, 3, 1, 4]}, labels, seeds=(2,))  # 2 of 4 pairs right
    entry = build_tables(records)[0].rows[("base", "m")]["a"]
    assert entry.aurocs == [1.0, 0.5]
    assert entry.text() == f"0.750 ± {np.std([1.0, 0.5], ddof=1):.3f} (2 seeds)"


def test_columns_put_scores_first_then_labelled_then_mia_tuner_then_blind():
    order = column_order(["blind", "mia-tuner", "fused", "loss", "recall", "zlib", "mia-tuner:lora"])
    assert order == ["loss", "zlib", "recall", "fused", "mia-tuner", "mia-tuner:lora", "blind"]


def test_aligned_and_base_models_are_separate_rows_aligned_first():
    labels = [1, 0, 1, 0]
    records = _records({"a": [1, 0, 1, 0]}, labels, mode="base")
    records += [dict(r, model="c", cell_key="c" + r["cell_key"], **({"mode": "aligned"} if r["kind"] == "cell" else {}))
                for r in _records({"a": [1, 0, 1, 0]}, labels)]
    assert list(build_tables(records)[0].rows) == [("aligned", "c"), ("base", "m")]


# ------------------------------------------------------------------ the runner on tiny models


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite-models")
    return [str(make_tiny_model_dir(root / "chat", with_chat_template=True, seed=1)),
            str(make_tiny_model_dir(root / "base", seed=2))]


def smoke_overrides(models, **more):
    return {"models": models, "seeds": [1], "train_per_class": [8], **more}


@pytest.fixture(scope="module")
def smoke_run(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite-out")
    cache = tmp_path_factory.mktemp("suite-cache")
    run, paths = benchmark("smoke", out, overrides=smoke_overrides(tiny_models), cache_dir=cache)
    return out, cache, run, paths


def test_the_smoke_suite_writes_every_record_and_the_report(smoke_run):
    out, _, run, paths = smoke_run
    methods = {r["method"] for r in run.records if r["kind"] == "method"}
    assert methods == {"loss", "zlib", "min-k%", "min-k%++", "lowercase", "fused", "blind", "mia-tuner"}
    cells_ = [r for r in run.records if r["kind"] == "cell"]
    assert sorted(c["mode"] for c in cells_) == ["aligned", "base"]
    assert sorted(r["mode"] for r in run.records if r.get("method") == "mia-tuner") == ["aligned", "base"]
    for record in run.records:
        if record["kind"] == "method":
            assert len(record["scores"]) == 20 and np.isfinite(record["scores"]).all()
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0
    csv_rows = paths["csv"].read_text().splitlines()
    assert len(csv_rows) == 1 + 2 * len(methods)  # a row per (model, method)
    html = paths["html"].read_text()
    assert "aligned models" in html and "base models" in html and "http" not in html.replace("http-equiv", "")
    assert json.loads(paths["provenance"].read_text())["versions"]["torch"]


def test_a_finished_suite_reruns_without_loading_a_model(smoke_run, tiny_models, monkeypatch):
    out, cache, first, _ = smoke_run

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a finished suite")

    monkeypatch.setattr(runner_module.CellRun, "load", refuse)
    started = time.perf_counter()
    again, _ = benchmark("smoke", out, overrides=smoke_overrides(tiny_models), cache_dir=cache)
    assert time.perf_counter() - started < 60
    assert sorted(r["sha256"] for r in again.records) == sorted(r["sha256"] for r in first.records)


def test_adding_a_method_computes_only_it(smoke_run, tiny_models, monkeypatch):
    import mia_tuner.run as run_module

    out, cache, first, _ = smoke_run
    computed = []
    real = run_module.score_split

    def spy(config, loaded, split, methods, shard=None):
        computed.extend(m.label for m in methods)
        return real(config, loaded, split, methods, shard)

    monkeypatch.setattr(run_module, "score_split", spy)
    methods = ["loss", "zlib", "min-k%", "min-k%++", "lowercase", "fused", "blind", "ref"]
    again, _ = benchmark("smoke", out, overrides=smoke_overrides(tiny_models, methods=methods,
                                                                 reference=tiny_models[1]), cache_dir=cache)
    assert computed == ["ref", "ref"]  # one new column in each model's cell, nothing else
    assert {r["method"] for r in again.records if r["kind"] == "method"} >= set(methods)


def test_a_report_only_run_computes_nothing_and_lists_what_is_pending(smoke_run, tiny_models, monkeypatch,
                                                                      tmp_path, capsys):
    out, cache, first, _ = smoke_run

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded by a report-only run")

    monkeypatch.setattr(runner_module.CellRun, "load", refuse)
    variants = [{"tag": v.tag, **v.settings} for v in load_suite("smoke").tuner]
    later = {**variants[0], "tag": "later", "learning_rate": 0.5}  # a variant added, not yet trained
    files = {p: p.read_bytes() for p in out.glob("cells/*/*.json")}
    run, paths = benchmark("smoke", out, overrides=smoke_overrides(tiny_models, tuner=variants + [later]),
                           cache_dir=cache, compute=False)
    assert run.pending and all(p.endswith(": mia-tuner:later") for p in run.pending) and len(run.pending) == 2
    assert {r["sha256"] for r in run.records} <= {r["sha256"] for r in first.records}  # what is recorded
    assert "Incomplete: 2 cell(s) with columns not computed yet" in paths["html"].read_text()
    assert "mia-tuner:later" in paths["markdown"].read_text().split("## ")[0]
    assert {p: p.read_bytes() for p in out.glob("cells/*/*.json")} == files  # no record written
    # a suite not started: every column of every cell pending, the report still written
    code = main(["benchmark", "smoke", "--report-only", "--models", ",".join(tiny_models), "--seeds", "1",
                 "--out", str(tmp_path / "fresh"), "--cache-dir", str(cache)])
    assert code == 0 and "4 cell(s) with columns not computed yet" in capsys.readouterr().out
    assert "every column" in (tmp_path / "fresh" / "report.md").read_text()


def test_a_cell_record_of_the_first_format_is_upgraded_without_a_model(smoke_run, tiny_models, monkeypatch):
    out, cache, first, _ = smoke_run
    cell = next(r for r in first.records if r["kind"] == "cell")
    store = CellStore(next(out.glob(f"cells/*{cell['cell_key'][:8]}")))
    fields = {k: v for k, v in cell.items() if k not in ("format", "column", "key", "sha256", "set")}
    store.save("cell", cell["cell_key"], fields)  # as version 1 wrote it: no `set`, keyed by the cell
    loss = next(r for r in first.records if r.get("method") == "loss" and r["cell_key"] == cell["cell_key"])
    store.save("loss", loss["key"], {k: v for k, v in loss.items()  # as written before `dataset_axis`
                                     if k not in ("format", "column", "key", "sha256", "dataset_axis")})
    written = store.path("loss").read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded to upgrade a cell record")

    monkeypatch.setattr(runner_module.CellRun, "load", refuse)
    again, _ = benchmark("smoke", out, overrides=smoke_overrides(tiny_models), cache_dir=cache)
    upgraded = next(r for r in again.records if r["kind"] == "cell" and r["cell_key"] == cell["cell_key"])
    assert upgraded["set"] == cell["set"] and upgraded["key"] == cell["key"] and upgraded["labels"] == cell["labels"]
    old_loss = next(r for r in again.records if r.get("method") == "loss" and r["cell_key"] == cell["cell_key"])
    assert old_loss["dataset_axis"] == "smoke" and store.path("loss").read_bytes() == written  # filled on read


def test_a_damaged_record_is_refused_with_its_file_named(smoke_run, tiny_models):
    out, cache, run, _ = smoke_run
    record = next(r for r in run.records if r["kind"] == "method" and r["method"] == "loss")
    path = next(out.glob(f"cells/*{record['cell_key'][:8]}/loss.json"))
    saved = path.read_text()
    try:
        path.write_text(saved.replace('"scores": [', '"scores": [0.5, ', 1))
        with pytest.raises(ArtefactError, match="loss.json was changed or damaged"):
            benchmark("smoke", out, overrides=smoke_overrides(tiny_models), cache_dir=cache)
        path.write_text(saved[: len(saved) // 2])
        with pytest.raises(ArtefactError, match="not valid JSON"):
            benchmark("smoke", out, overrides=smoke_overrides(tiny_models), cache_dir=cache)
    finally:
        path.write_text(saved)


def test_a_record_of_other_settings_is_recomputed_not_reused(tmp_path):
    store = CellStore(tmp_path)
    store.save("loss", "key-a", {"scores": [1.0]})
    assert store.load("loss", "key-a")["scores"] == [1.0]
    assert store.load("loss", "key-b") is None


def test_an_optional_set_that_cannot_be_had_is_skipped_and_reported(tiny_models, tmp_path):
    missing = tmp_path / "absent.jsonl"
    run, paths = benchmark(suite_from_dict({
        **MINIMAL, "models": tiny_models[1:], "methods": ["loss"], "train_per_class": [8], "test_per_class": 5,
        "datasets": ["smoke", {"set": str(missing), "optional": True}]}), tmp_path / "out", cache_dir=tmp_path)
    assert len(run.skipped) == 1 and "absent.jsonl" in run.skipped[0]
    assert "absent.jsonl" in paths["html"].read_text()
    with pytest.raises(Exception, match="absent.jsonl"):  # the same set, not optional: an error
        benchmark(suite_from_dict({**MINIMAL, "models": tiny_models[1:], "methods": ["loss"],
                                   "datasets": [str(missing)]}), tmp_path / "out2", cache_dir=tmp_path)


def test_the_cli_runs_a_suite_file_with_overrides(tiny_models, tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: cli\nmodels: [x]\ndatasets: [smoke]\nmethods: [loss, zlib]\ntest_per_class: 5\n"
                     "train_per_class: [4]\n")
    code = main(["benchmark", str(suite), "--models", tiny_models[1], "--seeds", "3,4", "--out",
                 str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    assert "report:" in capsys.readouterr().out
    rows = (tmp_path / "out" / "tables.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",2," in row for row in rows[1:])  # two seeds per cell


def test_the_cli_refuses_a_bad_override(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["benchmark", "smoke", "--seeds", "one,two"])
    assert "comma-separated int" in capsys.readouterr().err
    assert main(["benchmark", "no-such-suite"]) == 2
    assert "no suite 'no-such-suite'" in capsys.readouterr().err


_SUITE_SCRIPT = """
import sys
from mia_tuner.cli import main
suite, model, out, cache = sys.argv[1:5]
sys.exit(main(["benchmark", suite, "--models", model, "--device", "cpu", "--out", out, "--cache-dir", cache]))
"""


def test_two_processes_run_the_smoke_suites_scoring_exactly_as_one(tiny_models, tmp_path):
    """The smoke suite's score-based part under torchrun with 2 CPU processes: every score
    record equals the one process's, bit for bit (MIA-Tuner: tests/test_tuner.py)."""
    import os
    import shutil
    import sys

    from test_tuner import free_port, run_group

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed next to the interpreter")
    suite = load_suite("smoke", {"seeds": [1], "train_per_class": [8]})
    suite_file = tmp_path / "smoke-scores.yaml"
    suite_file.write_text(
        f"name: smoke-scores\nmodels: [x]\ndatasets: [smoke]\nmethods: {suite.methods}\n"
        f"method_settings: {json.dumps(suite.method_settings)}\nseeds: [1]\ntrain_per_class: [8]\n"
        f"test_per_class: {suite.test_per_class}\n".replace("'", '"'))
    script = tmp_path / "suite_script.py"
    script.write_text(_SUITE_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name, argv in (("one", [sys.executable, str(script)]),
                       ("two", [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), str(script)])):
        returncode, stderr = run_group([*argv, str(suite_file), tiny_models[1], str(tmp_path / name),
                                        str(tmp_path / f"cache-{name}")], env, timeout=300)
        assert returncode == 0, stderr[-3000:]

    def scores(name):
        records = [json.loads(p.read_text()) for p in (tmp_path / name).glob("cells/*/*.json")]
        return {r["method"]: r["scores"] for r in records if r["kind"] == "method"}

    one, two = scores("one"), scores("two")
    assert set(one) == set(suite.methods) and one == two
    info = json.loads(next((tmp_path / "two").glob("cells/*/loss.json")).read_text())["info"]
    assert info["processes"] == 2


def test_paired_differences_compare_labelled_detectors_with_the_best_score_and_fused():
    from mia_tuner.suite.tables import paired_rows

    rng = np.random.default_rng(3)
    labels = np.array([1] * 50 + [0] * 50)
    records = _records({"loss": rng.normal(size=100), "zlib": labels + rng.normal(size=100),
                        "fused": labels + 0.1 * rng.normal(size=100), "mia-tuner": rng.normal(size=100),
                        "blind": labels}, labels)
    rows = {r["comparison"]: r for r in paired_rows(build_tables(records), records)}
    assert set(rows) == {"fused − zlib", "mia-tuner − zlib", "mia-tuner − fused"}  # zlib: the best score
    assert rows["fused − zlib"]["low"] > 0 and rows["mia-tuner − fused"]["high"] < 0
    from mia_tuner.metrics import paired_auroc_difference

    by_method = {r["method"]: r["scores"] for r in records if r["kind"] == "method"}
    expected = paired_auroc_difference(labels, by_method["fused"], by_method["zlib"])
    assert rows["fused − zlib"]["difference"] == round(expected["difference"], 4)


def test_datasets_named_on_the_command_line_keep_the_suites_settings_for_them():
    suite = load_suite("offline", {"datasets": ["wikimia24:32", "smoke"]})
    first, second = suite.datasets
    assert first.set == "wikimia24:32" and first.optional  # the offline suite's entry, optional: true
    assert second.set == "smoke" and not second.optional and second.test_per_class is None


def test_a_suites_named_set_is_split_by_its_recipe_unless_the_entry_says_otherwise(tmp_path):
    from mia_tuner import sets

    offline = load_suite("offline")
    controlled = next(d for d in offline.datasets if d.set == "controlled:{model}:600")
    assert sets.split_recipe(controlled.for_model("gemma-3-270m")).fill(controlled).test_per_class == 200
    path = tmp_path / "suite.yaml"
    path.write_text("name: s\nmodels: [m]\ndatasets:\n  - {set: \"controlled:{model}:600\", test_per_class: 150}\n"
                    "methods: [loss]\n")
    entry = load_suite(str(path), {"datasets": ["controlled:{model}:600"]}).datasets[0]
    assert sets.split_recipe(entry.for_model("m")).fill(entry).test_per_class == 150


def test_a_cell_without_a_reference_leaves_ref_out_instead_of_failing(tiny_models, tmp_path):
    run, _ = benchmark(suite_from_dict({**MINIMAL, "models": tiny_models[1:], "methods": ["loss", "ref", "fused+ref"],
                                        "train_per_class": [8], "test_per_class": 5}),
                       tmp_path / "out", cache_dir=tmp_path)
    assert {r["method"] for r in run.records if r["kind"] == "method"} == {"loss"}


def test_a_suite_runs_a_safeguard_and_reports_every_attack_before_and_after(tiny_models, tmp_path):
    suite = suite_from_dict({
        **MINIMAL, "models": tiny_models[1:], "methods": ["loss", "zlib"], "train_per_class": [10],
        "test_per_class": 5, "safeguards": [{"tag": "scores", "against": "scores", "epochs": 1,
                                             "batch_per_class": 2, "train_per_class": 4,
                                             "validation_per_class": 2, "attack_train_per_class": 4}]})
    run, paths = benchmark(suite, tmp_path / "out", cache_dir=tmp_path / "cache")
    guard = [r for r in run.records if r["kind"] == "safeguard"]
    assert len(guard) == 1 and [row["method"] for row in guard[0]["rows"]] == ["loss", "zlib"]
    assert guard[0]["n_test"] == 10 and guard[0]["utility"]["kl"] >= 0
    assert "Safeguards: every attack before and after" in paths["html"].read_text()
    # the defender's own texts (4 + 4) attacked alike, a column of the report
    assert [row["method"] for row in guard[0]["seen_rows"]] == ["loss", "zlib"] and guard[0]["floor"] is None
    assert "defender's own texts" in paths["markdown"].read_text()
    again, _ = benchmark(suite, tmp_path / "out", cache_dir=tmp_path / "cache")  # kept, not retrained
    assert [r["sha256"] for r in again.records if r["kind"] == "safeguard"] == [guard[0]["sha256"]]


def test_a_suites_safeguard_on_a_set_with_its_model_before_injection_records_the_floor(tmp_path, monkeypatch):
    from mia_tuner import sets
    from mia_tuner.data import registry

    injected = str(make_tiny_model_dir(tmp_path / "injected", seed=2))
    before = str(make_tiny_model_dir(tmp_path / "before", seed=5))
    monkeypatch.setattr(registry, "FAMILIES", dict(registry.FAMILIES))

    @registry.register_set("toyinjected", "toyinjected:<n>")
    def _toy(rest, context):
        return registry.NamedSet(data=sets.smoke_set(), dataset="toy", split=rest, model=injected, reference=before)

    suite = suite_from_dict({
        **MINIMAL, "models": ["any"], "datasets": ["toyinjected:1"], "methods": ["loss"], "train_per_class": [10],
        "test_per_class": 5, "safeguards": [{"tag": "scores", "against": "scores", "epochs": 1,
                                             "batch_per_class": 2, "train_per_class": 4,
                                             "validation_per_class": 2, "attack_train_per_class": 4}]})
    run, paths = benchmark(suite, tmp_path / "out", cache_dir=tmp_path / "cache")
    guard = next(r for r in run.records if r["kind"] == "safeguard")
    assert guard["floor"]["model"] == before and [r["method"] for r in guard["floor"]["rows"]] == ["loss"]
    assert "perfect defence" in paths["markdown"].read_text()


def test_a_suites_safeguard_sets_its_attackers_mia_tuner_and_a_wrong_one_fails_before_any_model(
        tiny_chat_model_dir, tmp_path):
    guard = {"tag": "tuner", "against": "mia-tuner", "epochs": 1, "batch_per_class": 2, "train_per_class": 4,
             "validation_per_class": 2, "attack_train_per_class": 6}
    minimal = {**MINIMAL, "models": [str(tiny_chat_model_dir)], "methods": ["loss"], "train_per_class": [12],
               "test_per_class": 5}
    with pytest.raises(ConfigError, match="safeguards\\[\\].attack: unknown key"):
        suite_from_dict({**minimal, "safeguards": [{**guard, "attack": {"epoch": 1}}]})
    with pytest.raises(MethodError, match="soft prompt or prefix, not lora"):
        suite_from_dict({**minimal, "safeguards": [{**guard, "attack": {"peft": "lora"}}]})
    attack = {"epochs": 1, "batch_per_class": 2, "validation_per_class": 2, "num_virtual_tokens": 3}
    run, _ = benchmark(suite_from_dict({**minimal, "safeguards": [{**guard, "attack": attack}]}), tmp_path / "out",
                       cache_dir=tmp_path / "cache")
    record = next(r for r in run.records if r["kind"] == "safeguard")
    assert [(r["method"], r["adaptive"]) for r in record["rows"]] == [("loss", False), ("mia-tuner", False),
                                                                     ("mia-tuner", True)]
    report = json.loads((tmp_path / record["defence_dir"]).parent.joinpath("report.json").read_text())
    assert report["attack"]["num_virtual_tokens"] == 3 and report["attack"]["epochs"] == 1


def test_a_variant_limited_to_some_datasets_runs_only_on_them(tiny_models, tmp_path, monkeypatch):
    from importlib import resources

    copy = tmp_path / "copy.jsonl"  # a second dataset: the smoke set under another name
    copy.write_text((resources.files("mia_tuner.resources") / "smoke_set.jsonl").read_text())
    trained_on = []

    def fake_tuner(self, variant):
        trained_on.append((variant.tag, self.cell.dataset.set))
        return {**self.base(), "kind": "method", "method": variant.column, "scores": [0.0] * len(self.labels)}

    monkeypatch.setattr(runner_module.CellRun, "tuner", fake_tuner)
    suite = suite_from_dict({**MINIMAL, "models": tiny_models[1:], "methods": ["loss"], "train_per_class": [8],
                             "test_per_class": 5, "datasets": ["smoke", str(copy)],
                             "tuner": [{"tag": "everywhere"}, {"tag": "only-copy", "datasets": [str(copy)]}]})
    runner_module.run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert trained_on == [("everywhere", "smoke"), ("everywhere", str(copy)), ("only-copy", str(copy))]
    # named on the command line, a dataset the limit names may be left out: nothing to run, no error
    assert load_suite(str(_suite_file(tmp_path, suite)), {"datasets": ["smoke"]}).tuner[1].datasets == [str(copy)]


def _suite_file(tmp_path, suite):
    import yaml

    path = tmp_path / "limited.yaml"
    path.write_text(yaml.safe_dump({"name": suite.name, "models": suite.models, "datasets": [d.set for d in suite.datasets],
                                    "tuner": [{"tag": v.tag, **({"datasets": v.datasets} if v.datasets else {})}
                                              for v in suite.tuner]}))
    return path


def test_each_models_own_controlled_set_shares_one_table():
    labels = [1, 0, 1, 0]
    records = []
    for model in ("a", "b"):
        for r in _records({"loss": [1, 0, 1, 0]}, labels, dataset=f"controlled:{model}:600"):
            records.append(dict(r, model=model, cell_key=model + r["cell_key"], dataset_axis="controlled:{model}:600"))
    (table,) = build_tables(records)
    assert table.dataset == "controlled:{model}:600" and [m for _, m in table.rows] == ["a", "b"]


def test_learned_columns_ranking_validation_the_wrong_way_are_warned_about():
    from mia_tuner.suite.tables import wrong_way_rows

    base = {"kind": "method", "model": "m", "dataset": "d", "train_per_class": 80, "seed": 42}
    card = {"fine_tuned": {"chosen": {"validation_auroc": {"ref:adapted": 0.32, "ez:adapted": 0.61}}}}
    records = [
        {**base, "method": "ref:adapted", "info": card},
        {**base, "method": "ez:adapted", "info": card},
        {**base, "method": "mia-tuner", "history": {"chosen_epoch": 0, "initial_validation_auroc": 0.45,
                                                     "epochs": [{"epoch": 1, "validation_auroc": 0.9}]}},
        {**base, "method": "mia-tuner:lora", "history": {"chosen_epoch": 1, "initial_validation_auroc": 0.3,
                                                          "epochs": [{"epoch": 1, "validation_auroc": 0.7}]}},
        {**base, "method": "loss", "info": {}},
    ]
    warnings = wrong_way_rows(records)
    assert len(warnings) == 2
    assert "`ref:adapted`" in warnings[0] and "0.320" in warnings[0]
    assert "`mia-tuner`" in warnings[1] and "0.450" in warnings[1]
