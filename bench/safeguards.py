"""Safeguards on the offline models: every attack before and after a defence (issue: safeguards).

A thin wrapper over the suite runner (`mia_tuner.suite`, one way to produce a number): one
model, one set and one safeguard (any `mia-tuner defend` option) become a one-cell suite, run
into runs/bench/suites/safeguards (kept: a re-run recomputes nothing). The safeguard is the
cell's safeguard column (`mia_tuner.suite.defence`): the evaluation split's train part is cut into the
defender's texts and the attacker's (disjoint), the test part (200 + 200 on the large
controlled sets) is held out from both. Rows go to bench/results/safeguards.json, one record
per (model, dataset, split, safeguard, method, adaptive), replacing the previous record of the
same key.

    .venv/bin/python bench/safeguards.py --model smollm2-135m-instruct --set "controlled:{model}:600" --against scores \\
        --leave-out neighbor,recall,con-recall
    .venv/bin/python bench/safeguards.py --model smollm2-135m-instruct --set "controlled:{model}:600" --against mia-tuner
    .venv/bin/python bench/safeguards.py --model smollm2-135m-instruct --set "controlled:{model}:600" --against scores \\
        --anchor-weight 0 --tag paper-loss
"""

from __future__ import annotations

import argparse
import time

from detection import DATA, REFERENCE, ROOT, merge
from tuner_runs import dataset_entry
from mia_tuner.cli.defend import add_defence_settings, defence_settings
from mia_tuner.config import MethodConfig, default_cache_dir
from mia_tuner.safeguards.config import TEST_PER_CLASS
from mia_tuner.demo import demo_methods
from mia_tuner.suite import run_suite, suite_from_dict

RESULTS = ROOT / "bench" / "results" / "safeguards.json"
SUITE_DIR = ROOT / "runs" / "bench" / "suites" / "safeguards"
KEY = ("model", "dataset", "split", "safeguard", "method", "adaptive")


def safeguard_suite(args, settings: dict, tag: str) -> dict:
    settings = dict(settings)
    seed = settings.pop("seed")  # the suite's seed axis: the split's and the defence's
    methods = attacks(args)
    return {"name": "safeguards", "models": [args.model], "seeds": [seed],
            "datasets": [{**dataset_entry(args.set), "test_per_class": args.test_per_class}],
            "methods": methods.methods, "method_settings": {"fused_features": methods.fused_features},
            "reference": REFERENCE, "safeguards": [{"tag": tag, **settings}]}


def attacks(args) -> MethodConfig:
    """--methods, or every method but --leave-out (also left out of `fused`'s features)."""
    left_out = [m for m in args.leave_out.split(",") if m]
    return demo_methods(left_out) if left_out else MethodConfig(methods=args.methods.split(","))


def record_rows(guard: dict, cell: dict, safeguard: str) -> list[dict]:
    u = guard["utility"]
    return [{"model": guard["model"], "dataset": cell["set"]["dataset"], "split": cell["set"]["split"],
             "safeguard": safeguard, "method": r["method"], "adaptive": r["adaptive"],
             **{k: round(float(v), 4) for k, v in r.items() if k.startswith(("auroc", "tpr"))},
             "n_member": guard["n_member"], "n_nonmember": guard["n_nonmember"],
             "ppl_before": round(u["ppl_before"], 4), "ppl_after": round(u["ppl_after"], 4),
             "kl": round(u["kl"], 5), "greedy_agreement": u["greedy_agreement"],
             "run_seconds": round(guard["seconds"], 1), "date": time.strftime("%Y-%m-%d %H:%M")}
            for r in guard["rows"]]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--set", required=True, help="a set name: controlled:{model}:600, wikimia24:32, ... ({model}: the --model's own)")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--leave-out", default="", help="methods (and fused features) left out of 'all', "
                        "e.g. neighbor (half the scoring time)")
    parser.add_argument("--tag", default="", help="recorded as safeguard defence-<against>:<tag>")
    parser.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()))
    add_defence_settings(parser, skip=())
    args = parser.parse_args()
    settings = defence_settings(args)
    safeguard = f"defence-{settings['against']}" + (f":{args.tag}" if args.tag else "")
    suite = suite_from_dict(safeguard_suite(args, settings, args.tag or settings["against"]))
    records = run_suite(suite, SUITE_DIR, cache_dir=args.cache_dir, data_root=DATA).records
    cell = next(r for r in records if r["kind"] == "cell")
    guard = next(r for r in records if r["kind"] == "safeguard")
    rows = record_rows(guard, cell, safeguard)
    for row in rows:
        print(f"{row['method']}{' (adaptive)' if row['adaptive'] else ''}: AUROC {row['auroc_before']:.3f} -> "
              f"{row['auroc_after']:.3f}", flush=True)
    print(f"KL {guard['utility']['kl']:.3f}, perplexity {guard['utility']['ppl_before']:.2f} -> "
          f"{guard['utility']['ppl_after']:.2f}; {guard['seconds']:.0f} s")
    if not args.no_record:
        merge(rows, RESULTS, KEY)


if __name__ == "__main__":
    main()
