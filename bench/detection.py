"""Detection quality of every score-based method and the blind baseline (issue: foundation).

A thin wrapper over the suite runner (`mia_tuner.suite`, one way to produce a number): the
models x sets asked for become a suite (WikiMIA(-24) with the official code's split, every
method, each offline model the other's reference; the controlled set with the model before
injection as reference and every method but Neighbor, as the demo), run into
runs/bench/suites/detection, and each method's record is merged into
bench/results/detection.json.

    .venv/bin/python bench/detection.py                       # everything (hours on 2 cores)
    .venv/bin/python bench/detection.py --models smollm2-135m-instruct --sets wikimia24:32
    .venv/bin/python bench/detection.py --controlled           # the offline default's controlled set
    .venv/bin/python bench/detection.py --markdown             # print the tables for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mia_tuner.metrics import compute_metrics
from mia_tuner.config import default_cache_dir
from mia_tuner.suite import load_suite, run_suite, suite_from_dict
import records as records_module

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "detection.json"
RUNS = ROOT / "runs" / "bench" / "suites" / "detection"
MODELS = ["smollm2-135m-instruct", "gemma-3-270m"]
# each offline model the other's reference on WikiMIA(-24): the shipped offline suite's map
REFERENCE = load_suite("offline").reference
SETS = ["wikimia24:32", "wikimia24:128", "wikimia24:64", "wikimia:32", "wikimia:64"]
KEY = ("model", "dataset", "split", "method")
ALL_BUT_NEIGHBOR = ["loss", "zlib", "min-k%", "min-k%++", "lowercase", "ref", "recall", "con-recall",
                    "blind", "fused", "fused+ref"]


def data_config(dataset: str, split: str):
    """The named set (mia_tuner.sets) read from ../shared/data: split WikiMIA_length32 or 32."""
    from mia_tuner import sets

    return sets.wikimia_config(dataset, int(split.removeprefix("WikiMIA_length")), DATA)


def metric_row(model: str, dataset: str, split: str, method: str, m: dict, seconds: float | None) -> dict:
    """One detection.json record from a method's metrics (``Metrics.to_dict`` form)."""
    return {"model": model, "dataset": dataset, "split": split, "method": method,
            "auroc": round(m["auroc"], 4), "auroc_low": round(m["auroc_low"], 4),
            "auroc_high": round(m["auroc_high"], 4), "tpr_at_1_fpr": round(m["tpr_at_1_fpr"], 4),
            "n_member": m["n_member"], "n_nonmember": m["n_nonmember"],
            "run_seconds": None if seconds is None else round(seconds, 1),
            "date": time.strftime("%Y-%m-%d")}


def merge(records: list[dict], path: Path = RESULTS, key: tuple = KEY) -> None:
    """detection.json's rows replaced by ``records`` (records.merge)."""
    records_module.merge(records, path, key)


def detection_suite(models: list[str], specs: list[str], controlled: bool) -> dict:
    if controlled:
        return {"name": "detection-controlled", "models": models, "methods": ALL_BUT_NEIGHBOR,
                "datasets": ["controlled:{model}"]}
    return {"name": "detection", "models": models, "reference": REFERENCE, "methods": ["all"],
            "datasets": list(specs)}


def rows_of(records: list[dict], source: str | None = None, leave_out=()) -> list[dict]:
    """detection.json rows from the suite's records (every method of every cell but those in
    ``leave_out``), each naming the suite it came from when ``source`` is given."""
    cells = {r["cell_key"]: r for r in records if r["kind"] == "cell"}
    rows = []
    for r in records:
        if r["kind"] != "method" or r["method"] in leave_out:
            continue
        cell = cells[r["cell_key"]]
        m = compute_metrics(cell["labels"], r["scores"]).to_dict()
        names = cell["set"] or {"dataset": cell["dataset"], "split": ""}  # a file or hub set: its path
        row = metric_row(r["model"], names["dataset"], names["split"], r["method"], m, r.get("seconds"))
        rows.append({**row, "source": source} if source else row)
    return rows


def column_order(group: tuple[str, str]) -> tuple:
    """WikiMIA-24 by length, its de-biased version, WikiMIA by length, then the controlled set."""
    dataset, split = group
    digits = "".join(ch for ch in split if ch.isdigit())
    rank = {"wikimia24": 0, "wikimia": 2, "controlled": 3}.get(dataset, 4) + ("debiased" in split)
    return (rank, int(digits) if digits and "debiased" not in split else 0, split)


def markdown(records: list[dict] | None = None) -> str:
    """The tables of detection.json rows (default: the file's), a column per set, a row per method."""
    records = json.loads(RESULTS.read_text()) if records is None else records
    lines = []
    for model in dict.fromkeys(r["model"] for r in records):
        groups = sorted(dict.fromkeys((r["dataset"], r["split"]) for r in records if r["model"] == model),
                        key=column_order)
        methods = sorted(dict.fromkeys(r["method"] for r in records if r["model"] == model),
                         key=lambda m: m != "mia-tuner")  # MIA-Tuner's row first
        lines += [f"\n**{model}** — AUROC [95% CI] / TPR@1%FPR; test texts: members + non-members\n",
                  "| method | " + " | ".join(f"{d} {s}" for d, s in groups) + " |",
                  "|---|" + "---|" * len(groups)]
        table = {(r["dataset"], r["split"], r["method"]): r for r in records if r["model"] == model}
        for method in methods:
            cells = []
            for d, s in groups:
                r = table.get((d, s, method))
                cells.append("—" if r is None else
                             f"{r['auroc']:.3f} [{r['auroc_low']:.2f}, {r['auroc_high']:.2f}] / {r['tpr_at_1_fpr']:.2f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        sizes = []
        for d, s in groups:
            r = next(x for x in records if x["model"] == model and (x["dataset"], x["split"]) == (d, s))
            sizes.append(f"{r['n_member']}+{r['n_nonmember']}")
        lines.append("| *test texts* | " + " | ".join(sizes) + " |")
        tuned = [table.get((d, s, "mia-tuner")) for d, s in groups]
        if any(tuned):
            lines.append("| *MIA-Tuner: mode, training time* | " + " | ".join(
                "—" if r is None else f"{r['mode']} {r.get('peft', '')}, {r['train_seconds']:.0f} s"
                for r in tuned) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--sets", nargs="*", default=SETS)
    parser.add_argument("--controlled", action="store_true", help="only the controlled set")
    parser.add_argument("--markdown", action="store_true", help="print tables from the JSON")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()))
    parser.add_argument("--suite", help="a suite file whose run (--run) to read into detection.json")
    parser.add_argument("--run", help="the run directory of --suite (read only: nothing is computed)")
    parser.add_argument("--leave-out", default="", help="methods of --suite not to merge (comma-separated), "
                        "e.g. a `fused` that read fewer features than the row it would replace")
    args = parser.parse_args()
    if args.markdown:
        print(markdown())
        return
    if args.suite:  # the records of a suite run elsewhere (bench/suites/*.yaml), merged as they are
        suite = load_suite(args.suite)
        run = run_suite(suite, args.run, cache_dir=args.cache_dir, data_root=DATA, compute=False)
        rows = rows_of(run.records, source=suite.name, leave_out=[m for m in args.leave_out.split(",") if m])
        merge(rows)
        print(f"{len(rows)} rows of {args.run} merged into {RESULTS.relative_to(ROOT)}")
        return
    suite = suite_from_dict(detection_suite(args.models, args.sets, args.controlled))
    run = run_suite(suite, RUNS, cache_dir=args.cache_dir, data_root=DATA)
    merge(rows_of(run.records))

if __name__ == "__main__":
    main()
