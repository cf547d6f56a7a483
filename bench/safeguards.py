"""Safeguards on the offline models: every attack before and after a defence (issue: safeguards).

One run = `mia_tuner.safeguards.api.defend` on one model and one set: the evaluation split's
train part is cut into the defender's texts and the attacker's (disjoint), the test part
(200 + 200 on the large controlled sets) is held out from both. Rows go to
bench/results/safeguards.json, one record per (model, dataset, split, safeguard, method,
adaptive), replacing the previous record of the same key.

    .venv/bin/python bench/safeguards.py --model smollm2-135m-instruct --set controlled:600 --against scores \
        --leave-out neighbor
    .venv/bin/python bench/safeguards.py --model smollm2-135m-instruct --set controlled:600 --against mia-tuner
    .venv/bin/python bench/safeguards.py --model smollm2-135m-instruct --set controlled:600 --against scores \
        --anchor-weight 0 --tag paper-loss
"""

from __future__ import annotations

import argparse
import json
import time

from detection import ROOT
from tuner_runs import resolve_set, set_names
from mia_tuner.cli_defend import PREFIX, RENAMED
from mia_tuner.cli_fields import add_dataclass_options, values_from_args
from mia_tuner.config import MethodConfig, ModelConfig, SplitConfig, default_cache_dir
from mia_tuner.demo import demo_methods
from mia_tuner.models import load_model
from mia_tuner.safeguards.api import defend
from mia_tuner.safeguards.config import AGAINST, DefenceConfig
from mia_tuner.tuner.config import TunerConfig

RESULTS = ROOT / "bench" / "results" / "safeguards.json"
KEY = ("model", "dataset", "split", "safeguard", "method", "adaptive")


def record_rows(result, model: str, dataset: str, split: str, safeguard: str, seconds: float) -> list[dict]:
    u = result.utility
    rows = []
    for r in result.rows:
        rows.append({"model": model, "dataset": dataset, "split": split, "safeguard": safeguard,
                     "method": r["method"], "adaptive": r["adaptive"],
                     **{k: round(float(v), 4) for k, v in r.items() if k.startswith(("auroc", "tpr"))},
                     "n_member": result.n_member, "n_nonmember": result.n_nonmember,
                     "ppl_before": round(u.ppl_before, 4), "ppl_after": round(u.ppl_after, 4),
                     "kl": round(u.kl, 5), "greedy_agreement": u.greedy_agreement,
                     "run_seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d %H:%M")})
    return rows


def merge(rows: list[dict]) -> None:
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    keys = {tuple(r[k] for k in KEY) for r in rows}
    kept = [r for r in old if tuple(r[k] for k in KEY) not in keys]
    RESULTS.write_text(json.dumps(kept + rows, indent=1) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--set", required=True, help="controlled:600, wikimia24:WikiMIA_length32, ...")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--leave-out", default="", help="methods (and fused features) left out of 'all', "
                        "e.g. neighbor (half the scoring time)")
    parser.add_argument("--attack-epochs", type=int, default=2)
    parser.add_argument("--tag", default="", help="recorded as safeguard defence-<against>:<tag>")
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()))
    add_dataclass_options(parser, DefenceConfig, prefix=PREFIX, rename=RENAMED, choices={"against": AGAINST})
    args = parser.parse_args()
    config = DefenceConfig(**values_from_args(DefenceConfig, args, prefix=PREFIX))
    dataset, split = set_names(args.set)
    target, data, _, reference = resolve_set(args.model, args.set, args.cache_dir)
    safeguard = f"defence-{config.against}" + (f":{args.tag}" if args.tag else "")
    out = ROOT / "runs" / "bench" / "safeguards" / args.model / f"{dataset}-{split}-{safeguard.replace(':', '-')}"
    loaded = load_model(ModelConfig(name=target), cache_dir=args.cache_dir)
    left_out = [m for m in args.leave_out.split(",") if m]
    methods = demo_methods(left_out) if left_out else MethodConfig(methods=args.methods.split(","))
    started = time.perf_counter()
    result = defend(loaded, data, config, out, split_config=SplitConfig(max_test_per_class=args.test_per_class),
                    methods=methods, reference=reference,
                    cache_dir=args.cache_dir, attack=TunerConfig(epochs=args.attack_epochs, seed=config.seed))
    seconds = time.perf_counter() - started
    print(result.table, flush=True)
    print(f"{seconds:.0f} s")
    if not args.no_record:
        merge(record_rows(result, args.model, dataset, split, safeguard, seconds))


if __name__ == "__main__":
    main()
