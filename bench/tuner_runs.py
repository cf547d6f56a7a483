"""MIA-Tuner on the offline models: BENCHMARKS rows, variants and learning curves.

A thin wrapper over the suite runner (`mia_tuner.suite`, one way to produce a number): one
model, one set, one MIA-Tuner variant (any `mia-tuner train` option) and the score-based
methods on the same test texts become a one-cell suite, run into runs/bench/suites/tuner-runs
(kept: a re-run recomputes nothing, a new variant trains only itself). Every run is appended
to bench/results/tuner_runs.json (settings, per-epoch validation AUROC, the chosen epoch,
test AUROC). With --record the cell's rows replace the matching ones in
bench/results/detection.json (MIA-Tuner with "mode", "train_seconds", the paired
differences); with --learning-curve MIA-Tuner's and `fused`'s test AUROC go to
bench/results/learning_curves.json.

    .venv/bin/python bench/tuner_runs.py --model gemma-3-270m --set "controlled:{model}:600" --record
    .venv/bin/python bench/tuner_runs.py --model gemma-3-270m --set wikimia24:debiased --record
    .venv/bin/python bench/tuner_runs.py --model smollm2-135m-instruct --set "controlled:{model}:600" \\
        --train-per-class 150 --learning-curve
    .venv/bin/python bench/tuner_runs.py --model smollm2-135m-instruct --set wikimia24:32 \\
        --lr 3e-2 --epochs 8 --peft lora --method-tag lr-sweep   # any `mia-tuner train` option

(Until 2026-11-29 this script trained outside the suite runner; its --curve option, the test
AUROC after every epoch, went with that. The records it wrote are kept in the JSON files.)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from detection import DATA, REFERENCE, ROOT, merge, rows_of
from mia_tuner import sets
from mia_tuner.cli.train import add_tuner_settings, tuner_settings
from mia_tuner.config import DEFAULT_SEED, SplitConfig, default_cache_dir
from mia_tuner.errors import DataError
from mia_tuner.suite.tables import kind
from mia_tuner.metrics import compute_metrics, paired_auroc_difference
from mia_tuner.suite import run_suite, suite_from_dict
import records as records_module

RUNS = ROOT / "bench" / "results" / "tuner_runs.json"
CURVES = ROOT / "bench" / "results" / "learning_curves.json"
SUITE_DIR = ROOT / "runs" / "bench" / "suites" / "tuner-runs"


def dataset_entry(spec: str) -> dict:
    """The suite's dataset entry for a --set: a set name (mia_tuner.sets; ``{model}`` stands
    for --model), split by the set's recipe (the split the BENCHMARKS rows use)."""
    try:
        sets.split_recipe(spec.replace("{model}", "model"))  # a bad name is refused here
    except DataError as exc:
        raise SystemExit(f"--set: {exc}") from None
    if not sets.is_named(spec.replace("{model}", "model")):
        raise SystemExit(f"--set {spec!r} is not a set name; named sets: {sets.spellings()}")
    return {"set": spec}


def tuner_suite(args, settings: dict) -> dict:
    variant = {"tag": args.method_tag or "default", "preset": args.preset, **settings}
    return {"name": "tuner-runs", "models": [args.model], "datasets": [dataset_entry(args.set)],
            "methods": ["blind"] if args.no_compare else args.methods.split(","),
            "reference": REFERENCE, "seeds": [args.seed], "train_per_class": [args.train_per_class],
            "tuner": [variant],
            "method_settings": {"fused_features": args.fused_features.split(",")} if args.fused_features else {}}


def paired(labels, scores: dict, column: str) -> dict:
    """The variant minus `fused` and minus the best reference-free score-based method (picked on
    these test texts, which favours the baseline; the suite report's rule, from the registry's
    capabilities), with paired bootstrap 95% intervals."""
    aurocs = {m: compute_metrics(labels, s, n_bootstrap=0).auroc for m, s in scores.items() if kind(m) == "free"}
    against = [m for m in ("fused",) if m in scores] + ([max(aurocs, key=aurocs.get)] if aurocs else [])
    return {m: {k: round(v, 4) if isinstance(v, float) else v
                for k, v in paired_auroc_difference(labels, scores[column], scores[m]).items()}
            for m in against}


def detector_mode(tuner: dict, cell: dict) -> str:
    """aligned | base: the detector's (records before 2026-11-29 lack it: the variant's setting,
    or the cell's automatic mode)."""
    mode = tuner["config"]["mode"]
    return tuner.get("mode") or (mode if mode != "auto" else cell["mode"])


def run_record(args, cell: dict, tuner: dict, metrics, differences: dict) -> dict:
    """One line of tuner_runs.json."""
    history = tuner["history"]
    return {"model": args.model, "dataset": cell["set"]["dataset"], "split": cell["set"]["split"],
            "tag": args.method_tag, "mode": detector_mode(tuner, cell), "config": tuner["config"],
            "epochs": history["epochs"], "initial_validation_auroc": history["initial_validation_auroc"],
            "chosen_epoch": history["chosen_epoch"], "selection": history["selection"],
            "test_auroc": round(metrics.auroc, 4), "test_auroc_low": round(metrics.auroc_low, 4),
            "test_auroc_high": round(metrics.auroc_high, 4), "tpr_at_1_fpr": round(metrics.tpr_at_fpr[0.01], 4),
            "train_seconds": round(history["seconds"], 1), "run_seconds": round(tuner["seconds"], 1),
            "test_texts": len(cell["labels"]), "paired": differences, "date": time.strftime("%Y-%m-%d %H:%M")}


def append(path, records: list[dict]) -> None:
    records_module.append(records, path)


def curve_records(args, cell: dict, scores: dict, column: str) -> list[dict]:
    """learning_curves.json: the variant's and `fused`'s test AUROC at this training size."""
    out = []
    for name in (column, "fused"):
        if name in scores:
            m = compute_metrics(cell["labels"], scores[name])
            out.append({"model": args.model, "dataset": cell["set"]["dataset"], "method": name,
                        "train_per_class": args.train_per_class, "auroc": round(m.auroc, 4),
                        "auroc_low": round(m.auroc_low, 4), "auroc_high": round(m.auroc_high, 4),
                        "n_test": len(cell["labels"]), "date": time.strftime("%Y-%m-%d")})
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--set", required=True, help="a set name: controlled:{model}, controlled:{model}:600, "
                        "wikimia24:32, wikimia24:debiased, wikimia:32, ... ({model}: the --model's own)")
    add_tuner_settings(parser)  # --preset and every TunerConfig field, as `mia-tuner train` has them
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--train-per-class", type=int, default=SplitConfig.max_train_per_class)
    parser.add_argument("--method-tag", default="", help="record MIA-Tuner as mia-tuner:<tag>")
    parser.add_argument("--learning-curve", action="store_true",
                        help="append MIA-Tuner's and fused's test AUROC to learning_curves.json")
    parser.add_argument("--record", action="store_true", help="write the rows into detection.json")
    parser.add_argument("--record-tuner-only", action="store_true",
                        help="with --record, write MIA-Tuner's row only (the other rows stay as recorded)")
    parser.add_argument("--no-compare", action="store_true", help="MIA-Tuner only (sweeps)")
    parser.add_argument("--methods", default="all", help="comma-separated baselines (default: all)")
    parser.add_argument("--fused-features", default="",
                        help="comma-separated methods `fused` reads (default: every fusable one)")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()))
    args = parser.parse_args()

    settings = {k: v for k, v in tuner_settings(args).items() if v is not None}
    suite = suite_from_dict(tuner_suite(args, settings))
    column = suite.tuner[0].column
    records = run_suite(suite, SUITE_DIR, cache_dir=args.cache_dir, data_root=DATA).records
    cell = next(r for r in records if r["kind"] == "cell")
    scores = {r["method"]: np.asarray(r["scores"]) for r in records if r["kind"] == "method"}
    tuner = next(r for r in records if r.get("method") == column)
    labels = np.asarray(cell["labels"])
    metrics = compute_metrics(labels, scores[column])
    differences = paired(labels, scores, column)
    append(RUNS, [run_record(args, cell, tuner, metrics, differences)])
    print(f"{column}: AUROC {metrics.auroc:.3f} [{metrics.auroc_low:.3f}, {metrics.auroc_high:.3f}]; "
          f"paired {json.dumps(differences)}", flush=True)
    if args.record:
        rows = rows_of(records)
        if args.record_tuner_only:  # the baselines here differ from the recorded ones (e.g. fewer fused features)
            rows = [row for row in rows if row["method"] == column]
        for row in rows:
            row["test_texts"] = len(labels)
            if row["method"] == column:
                row.update(mode=detector_mode(tuner, cell), peft=tuner["config"]["peft"], paired=differences,
                           train_seconds=round(tuner["history"]["seconds"], 1),
                           chosen_epoch=tuner["history"]["chosen_epoch"], epochs=tuner["config"]["epochs"],
                           learning_rate=tuner["config"]["learning_rate"])
        merge(rows)
    if args.learning_curve:
        append(CURVES, curve_records(args, cell, scores, column))


if __name__ == "__main__":
    main()
