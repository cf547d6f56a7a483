"""MIA-Tuner on the offline models: learning curves and the BENCHMARKS rows (issue: MIA-Tuner).

One run = `train_detector` on one model and one set (the same evaluation split as
`bench/detection.py`), with every score-based method and the blind baseline scored on the
same test texts. Every run is appended to bench/results/tuner_runs.json (settings, per-epoch
validation AUROC and, with --curve, the test AUROC after every epoch — for the convergence
curve only: the detector is still chosen on validation). With --record its rows replace the
matching ones in bench/results/detection.json ("method": "mia-tuner" with "mode",
"train_seconds", "test_texts"; baselines with "test_texts").

    .venv/bin/python bench/tuner_runs.py --model smollm2-135m-instruct --set wikimia24:WikiMIA_length32 --curve
    .venv/bin/python bench/tuner_runs.py --model gemma-3-270m --set controlled --record
    .venv/bin/python bench/tuner_runs.py --model gemma-3-270m --set wikimia24:debiased --record
    .venv/bin/python bench/tuner_runs.py --model smollm2-135m-instruct --set wikimia24:WikiMIA_length32 \
        --lr 3e-2 --epochs 8 --peft lora --tag lr-sweep   # any `mia-tuner train` option
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from detection import REFERENCE, ROOT, data_config, merge, metric_row
from shift import POOLED, debiased_wikimia24
from mia_tuner.cli_fields import add_dataclass_options, values_from_args
from mia_tuner.config import MethodConfig, ModelConfig, SplitConfig, default_cache_dir
from mia_tuner.data import load_membership_set
from mia_tuner.training.controlled import ControlledConfig
from mia_tuner.demo import DEMO_SPLIT, demo_config, ensure_controlled
from mia_tuner.metrics import compute_metrics, paired_auroc_difference
from mia_tuner.models import load_model
from mia_tuner.tuner.api import ROW, train_detector
from mia_tuner.tuner.config import PRESETS, TunerConfig

RUNS = ROOT / "bench" / "results" / "tuner_runs.json"
CURVES = ROOT / "bench" / "results" / "learning_curves.json"
LARGE_TEST = 200  # test texts per class on the large controlled sets
CONTROLLED_SPLIT = "python-docs-64w"
TUNER = "tuner_"  # dests of the options generated from TunerConfig


def set_names(spec: str) -> tuple[str, str]:
    """(dataset, split) under which a --set is recorded."""
    if spec == "controlled":
        return "controlled", CONTROLLED_SPLIT
    if spec.startswith("controlled:"):  # controlled:600 -> 600 + 600 passages
        n = int(spec.split(":")[1])
        return "controlled", f"{CONTROLLED_SPLIT}-{n}+{n}"
    if spec == "wikimia24:debiased":
        return "wikimia24", POOLED
    dataset, split = spec.split(":")
    return dataset, split


def resolve_set(model: str, spec: str, cache_dir: str, train_per_class: int = 80):
    """(target model name or path, data, split config, reference) for a --set."""
    if spec == "controlled":
        set_dir = ensure_controlled(model, ControlledConfig(), cache_dir)
        run = demo_config(set_dir, model, "unused", cache_dir, "auto")
        return run.model.name, load_membership_set(run.data), DEMO_SPLIT, model
    if spec.startswith("controlled:"):  # a large set: 200 + 200 test texts, the rest to train
        set_dir = ensure_controlled(model, ControlledConfig(n_per_class=int(spec.split(":")[1])), cache_dir)
        run = demo_config(set_dir, model, "unused", cache_dir, "auto")
        split = SplitConfig(max_train_per_class=train_per_class, max_test_per_class=LARGE_TEST)
        return run.model.name, load_membership_set(run.data), split, model
    if spec == "wikimia24:debiased":  # pooled, paired, masked (bench/shift.py); twins stay together
        return (model, debiased_wikimia24(), SplitConfig(train_fraction=0.6, group_by="event"),
                REFERENCE[model])
    return (model, load_membership_set(data_config(*set_names(spec))), SplitConfig(fill_test_first=False),
            REFERENCE[model])


def test_curve(epoch, model, pipeline, split) -> dict:
    """Test AUROC after this epoch (documentation of convergence, never used to choose)."""
    scores = pipeline.score(model, split.test.texts)
    return {"test_auroc": round(compute_metrics(np.array(split.test.labels), scores,
                                                n_bootstrap=0).auroc, 4)}


def append_run(record: dict) -> None:
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else []
    RUNS.write_text(json.dumps(runs + [record], indent=1) + "\n")


def detection_records(out: Path, model: str, dataset: str, split: str, seconds: float | None) -> list[dict]:
    """detection.json rows of a finished run, read from its run directory: MIA-Tuner's and
    every baseline's, all on the same test texts."""
    metrics = json.loads((out / "metrics.json").read_text())
    tuner = json.loads((out / "config.json").read_text())["tuner"]
    extra = metrics["extra"]
    detector = json.loads((out / "detector" / "detector.json").read_text())
    rows = []
    for method, m in metrics["methods"].items():
        row = {**metric_row(model, dataset, split, method, m, seconds), "test_texts": metrics["n_texts"]}
        if method == ROW:
            row.update(mode=detector["mode"], peft=tuner["peft"],
                       train_seconds=round(extra["train_seconds"], 1),
                       chosen_epoch=extra["history"]["chosen_epoch"], epochs=tuner["epochs"],
                       learning_rate=tuner["learning_rate"])
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--set", required=True, help="dataset:split (as bench/detection.py), controlled, "
                        "or wikimia24:debiased (bench/shift.py)")
    parser.add_argument("--preset", default="default", choices=list(PRESETS))
    # every TunerConfig field, as `mia-tuner train` has them (seed and train_per_class below)
    add_dataclass_options(parser, TunerConfig, prefix=TUNER, skip=("seed", "train_per_class"),
                          rename={"learning_rate": "--lr"}, unset=tuple(PRESETS["default"]))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--train-per-class", type=int, default=80)
    parser.add_argument("--method-tag", default="", help="record MIA-Tuner as mia-tuner:<tag>")
    parser.add_argument("--learning-curve", action="store_true",
                        help="append MIA-Tuner's and fused's test AUROC to learning_curves.json")
    parser.add_argument("--curve", action="store_true", help="also score the test part after every epoch")
    parser.add_argument("--record", action="store_true", help="write the rows into detection.json")
    parser.add_argument("--record-only", action="store_true",
                        help="write the rows of the last finished run of this model and set, without training")
    parser.add_argument("--no-compare", action="store_true", help="MIA-Tuner only (sweeps)")
    parser.add_argument("--methods", default="all",
                        help="comma-separated baselines to compare with (default: all)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()))
    args = parser.parse_args()

    dataset, split = set_names(args.set)
    # a tagged experiment keeps its own run directory; the default run's is the one recorded
    tag = args.tag or args.method_tag
    suffix = f"-{tag}" if tag not in ("", "default") else ""
    out = ROOT / "runs" / "bench" / "mia-tuner" / args.model / f"{dataset}-{split}{suffix}"
    if args.record_only:  # rows of a run already in runs/bench/mia-tuner (no training)
        runs = [r for r in json.loads(RUNS.read_text()) if (r["model"], r["dataset"], r["split"])
                == (args.model, dataset, split)] if RUNS.exists() else []
        merge(detection_records(out, args.model, dataset, split, runs[-1]["run_seconds"] if runs else None))
        return
    target, data, split_config, reference = resolve_set(args.model, args.set, args.cache_dir,
                                                        args.train_per_class)
    config = TunerConfig.from_preset(args.preset, **values_from_args(TunerConfig, args, prefix=TUNER),
                                     seed=args.seed, train_per_class=args.train_per_class)
    if args.seed is not None:
        split_config = replace(split_config, seed=args.seed)
    loaded = load_model(ModelConfig(name=target), cache_dir=args.cache_dir)
    started = time.perf_counter()
    result = train_detector(loaded, data, config, out_dir=out, split_config=split_config,
                            compare_methods=not args.no_compare, reference=reference,
                            methods=MethodConfig(methods=args.methods.split(","),
                                                 batch_size=config.batch_size),
                            cache_dir=args.cache_dir, on_epoch=test_curve if args.curve else None)
    seconds = time.perf_counter() - started
    print(result.table, flush=True)
    tuner = result.metrics[ROW]
    append_run({"model": args.model, "dataset": dataset, "split": split, "tag": args.tag,
                "mode": result.detector.pipeline.mode, "config": config.to_dict(),
                "epochs": result.history.epochs,
                "initial_validation_auroc": result.history.initial_validation_auroc,
                "chosen_epoch": result.history.chosen_epoch, "selection": result.history.selection,
                "test_auroc": round(tuner.auroc, 4), "test_auroc_low": round(tuner.auroc_low, 4),
                "test_auroc_high": round(tuner.auroc_high, 4),
                "tpr_at_1_fpr": round(tuner.tpr_at_fpr[0.01], 4),
                "train_seconds": round(result.train_seconds, 1), "run_seconds": round(seconds, 1),
                "test_texts": len(result.split.test.texts), "date": time.strftime("%Y-%m-%d %H:%M")})
    paired = paired_rows(result)
    if paired:
        print(json.dumps(paired, indent=1))
    if args.record:
        rows = detection_records(out, args.model, dataset, split, seconds)
        for row in rows:
            if row["method"] == ROW:
                row["paired"] = paired
                if args.method_tag:
                    row["method"] = f"{ROW}:{args.method_tag}"
        merge(rows)
    if args.learning_curve:
        append_curves(result, args.model, dataset, args.train_per_class,
                      f"{ROW}:{args.method_tag}" if args.method_tag else ROW)


def paired_rows(result) -> dict:
    """MIA-Tuner minus `fused` and minus the best reference-free score-based method (picked on
    these test texts, which favours the baseline), with paired bootstrap 95% intervals."""
    labels = np.array(result.split.test.labels)
    candidates = {name: m.auroc for name, m in result.metrics.items()
                  if name not in (ROW, "blind", "fused", "fused+ref", "ref")}
    against = [name for name in ("fused",) if name in result.scores]
    if candidates:
        against.append(max(candidates, key=candidates.get))
    return {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in
                   paired_auroc_difference(labels, result.scores[ROW], result.scores[name]).items()}
            for name in against}


def append_curves(result, model: str, dataset: str, train_per_class: int, method: str) -> None:
    """learning_curves.json: one record per detector that uses labelled texts."""
    records = json.loads(CURVES.read_text()) if CURVES.exists() else []
    for name, label in ((ROW, method), ("fused", "fused")):
        if name in result.metrics:
            m = result.metrics[name]
            records.append({"model": model, "dataset": dataset, "method": label,
                            "train_per_class": train_per_class, "auroc": round(m.auroc, 4),
                            "auroc_low": round(m.auroc_low, 4), "auroc_high": round(m.auroc_high, 4),
                            "n_test": len(result.split.test.texts), "date": time.strftime("%Y-%m-%d")})
    CURVES.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
