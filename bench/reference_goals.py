"""Issue 30's goals, measured on the reference-calibration suite's records (nothing is
computed here: the suite must have run, `bench/suites/reference-calibration.yaml`).

Per controlled set (the model before injection as reference, 200 + 200 test texts):

* a reference and labelled non-members: the adapted method chosen on validation (the highest
  validation AUROC at the fine-tuning the adaptation kept) against AUROC ref + (1 − ref) / 2
  and twice `ref`'s TPR@1%FPR;
* a reference, no labels: `ez` and `ref-min-k%` (unadapted) against `ref`, paired interval;
* labelled non-members, no reference: `fsd` against Min-K%++ + 0.05, paired interval.

Writes bench/results/reference_goals.json, bench/results/adaptation.json (what each
fine-tuning took: time, the process's peak memory, what was chosen) and the goals block of
BENCHMARKS.md (between ``<!-- reference-goals begin -->`` and ``<!-- reference-goals end -->``).

    .venv/bin/python bench/reference_goals.py [--run runs/suites/reference-calibration]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from blocks import publish as publish_block
from mia_tuner.metrics import compute_metrics, paired_auroc_difference
from mia_tuner.suite import load_suite, run_suite

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "bench" / "suites" / "reference-calibration.yaml"
WIKI_SUITE = ROOT / "bench" / "suites" / "reference-calibration-wikimia.yaml"
GOALS = ROOT / "bench" / "results" / "reference_goals.json"
COSTS = ROOT / "bench" / "results" / "adaptation.json"


def cell_methods(records: list[dict]) -> dict[tuple, dict]:
    """(model, dataset) -> {"labels", "methods": {label: record}}."""
    cells = {}
    for r in records:
        key = (r["model"], r["dataset"])
        cell = cells.setdefault(key, {"labels": None, "methods": {}})
        if r["kind"] == "cell":
            cell["labels"] = np.asarray(r["labels"])
        elif r["kind"] == "method":
            cell["methods"][r["method"]] = r
    return cells


def chosen_adapted(methods: dict) -> tuple[str, float] | None:
    """The adapted method with the highest validation AUROC at the kept fine-tuning."""
    card = next((r["info"].get("fine_tuned") for m, r in methods.items() if m.endswith(":adapted")), None)
    if not card or not card.get("selected_on_validation"):
        return None
    label, value = max(card["chosen"]["validation_auroc"].items(), key=lambda item: item[1])
    return label, value


def row(labels, methods, a: str, b: str | None = None) -> dict:
    """AUROC, interval and TPR@1%FPR of ``a``; with ``b``, the paired difference a - b."""
    scores = np.asarray(methods[a]["scores"], dtype=float)
    m = compute_metrics(labels, scores)
    out = {"method": a, "auroc": round(m.auroc, 4), "auroc_low": round(m.auroc_low, 4),
           "auroc_high": round(m.auroc_high, 4), "tpr_at_1_fpr": round(m.tpr_at_fpr[0.01], 4)}
    if b is not None:
        d = paired_auroc_difference(labels, scores, np.asarray(methods[b]["scores"], dtype=float))
        out.update(against=b, difference=round(d["difference"], 4), low=round(d["low"], 4), high=round(d["high"], 4))
    return out


def goals_of(model: str, dataset: str, cell: dict) -> list[dict]:
    labels, methods = cell["labels"], cell["methods"]
    ref = row(labels, methods, "ref")
    minkpp = row(labels, methods, "min-k%++")
    out = []
    chosen = chosen_adapted(methods)
    if chosen:
        r = row(labels, methods, chosen[0], "ref")
        target = ref["auroc"] + (1 - ref["auroc"]) / 2
        out.append({"goal": "reference + labelled non-members: AUROC >= ref + half the way to 1, TPR@1%FPR >= 2 x ref's",
                    "target_auroc": round(target, 4), "target_tpr": round(2 * ref["tpr_at_1_fpr"], 4),
                    "validation_auroc": round(chosen[1], 4), **r,
                    "met": r["auroc"] >= target and r["tpr_at_1_fpr"] >= 2 * ref["tpr_at_1_fpr"]})
    for name in ("ez", "ref-min-k%"):
        if name in methods:
            r = row(labels, methods, name, "ref")
            out.append({"goal": "reference, no labels: above ref, paired interval above 0", **r, "met": r["low"] > 0})
    if "fsd" in methods:
        r = row(labels, methods, "fsd", "min-k%++")
        out.append({"goal": "labelled non-members, no reference: >= Min-K%++ + 0.05", "target_auroc":
                    round(minkpp["auroc"] + 0.05, 4), **r, "met": r["difference"] >= 0.05})
    return [{"model": model, "dataset": dataset, "ref": ref, "min-k%++": minkpp, **g} for g in out]


def costs_of(records: list[dict]) -> list[dict]:
    """What every fine-tuning of the suite took (from the cards the runs recorded)."""
    seen, out = set(), []
    for r in records:
        card = (r.get("info") or {}).get("fine_tuned") if r["kind"] == "method" else None
        if not card or (r["model"], r["dataset"], card["role"]) in seen:
            continue
        seen.add((r["model"], r["dataset"], card["role"]))
        base = card["base"] if card["role"] == "reference:adapted" else "the target"
        out.append({"model": r["model"], "dataset": r["dataset"], "role": card["role"], "base": base,
                    "seconds": card["seconds"], "peak_rss_mb": card.get("peak_rss_mb"),
                    "n_trained_on": card["n_trained_on"], "n_validation": card["n_validation"],
                    "candidates": len(card["candidates"]), "chosen": card["description"]})
    return out


def fmt(g: dict) -> str:
    interval = f"{g['difference']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}] vs {g['against']}"
    target = f"{g['target_auroc']:.3f}" if "target_auroc" in g else "> ref"
    if "target_tpr" in g:
        target += f"; TPR ≥ {g['target_tpr']:.3f}" + (" (unreachable)" if g["target_tpr"] > 1 else "")
    return (f"| {g['model']} | {g['goal'].split(':')[0]} | `{g['method']}` | {g['auroc']:.3f} "
            f"[{g['auroc_low']:.3f}, {g['auroc_high']:.3f}] | {g['tpr_at_1_fpr']:.3f} | {interval} | {target} | "
            f"{'met' if g['met'] else '**missed**'} |")


def block(goals: list[dict], costs: list[dict]) -> str:
    date = goals[0]["date"] if goals else ""
    lines = ["<!-- reference-goals begin (generated by bench/reference_goals.py; do not edit) -->",
             f"Generated {date} from the records of the `reference-calibration` suite "
             "(goals) and of both reference-calibration suites (fine-tunings).", "",
             "| model | with | detector | AUROC [95% CI] | TPR@1%FPR | paired difference | goal | |",
             "|---|---|---|---|---:|---|---|---|"]
    lines += [fmt(g) for g in goals]
    lines += ["", "`ref` on the same texts: " + "; ".join(
        f"{m}: {g['ref']['auroc']:.3f}, TPR@1%FPR {g['ref']['tpr_at_1_fpr']:.3f} (Min-K%++ {g['min-k%++']['auroc']:.3f})"
        for m, g in {g["model"]: g for g in goals}.items()) + ".", "",
        "| model | set | fine-tuned | trained on | validation | candidates | time | peak memory of the process | kept |",
        "|---|---|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {c['model']} | {c['dataset']} | {c['role']} ({c['base']}) | {c['n_trained_on']} | {c['n_validation']} | "
              f"{c['candidates']} | {c['seconds'] / 60:.1f} min | {c['peak_rss_mb'] / 1024:.1f} GB | {c['chosen']} |"
              for c in costs]
    lines.append("<!-- reference-goals end -->")
    return "\n".join(lines)


def stored_block() -> str:
    """The goals block from reference_goals.json and adaptation.json (bench/check_generated.py)."""
    return block(json.loads(GOALS.read_text()), json.loads(COSTS.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "suites" / "reference-calibration")
    parser.add_argument("--wikimia-run", type=Path, default=ROOT / "runs" / "suites" / "reference-calibration-wikimia",
                        help="the WikiMIA-24 suite's run, for what its fine-tunings took (left out if absent)")
    args = parser.parse_args()
    data_root = ROOT.parent / "shared" / "data"
    run = run_suite(load_suite(str(SUITE)), args.run, data_root=data_root, compute=False)
    cells = cell_methods(run.records)
    goals = [{**g, "date": time.strftime("%Y-%m-%d")} for (model, dataset), cell in cells.items()
             if dataset.startswith("controlled") for g in goals_of(model, dataset, cell)]
    costs = costs_of(run.records)
    if args.wikimia_run.is_dir():
        costs += costs_of(run_suite(load_suite(str(WIKI_SUITE)), args.wikimia_run, data_root=data_root,
                                    compute=False).records)
    GOALS.write_text(json.dumps(goals, indent=1) + "\n")
    COSTS.write_text(json.dumps(costs, indent=1) + "\n")
    publish_block("reference-goals")
    print(stored_block())


if __name__ == "__main__":
    main()
