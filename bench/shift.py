"""How shifted are the shipped benchmarks, and what de-biasing leaves (issue: benchmark data).

For WikiMIA-24 and WikiMIA as shipped in ../shared/data, their date-masked version and their
paired + masked ("de-biased") version: the blind baseline's cross-validated AUROC (events kept
within one fold) and the year-only heuristic's AUROC. Plus the pooled de-biased WikiMIA-24 the
model runs use (`debiased_wikimia24`: the four lengths hold different articles, so they are
pooled, cut to their first 32 words, deduplicated, paired by event and masked).

Model rows (MIA-Tuner and the best score-based method, for both offline models, on the
shipped WikiMIA-24 length 32 and on the pooled de-biased set) are read from
bench/results/detection.json, where bench/tuner_runs.py --record writes them:

    .venv/bin/python bench/tuner_runs.py --model smollm2-135m-instruct --set wikimia24:debiased --record
    .venv/bin/python bench/shift.py            # writes bench/results/shift.json, prints a table
"""

from __future__ import annotations

import json
import time

from mia_tuner.data import deduplicate, load_membership_set
from mia_tuner.data.shift import debias, mask_set, shift_report
from mia_tuner.data.types import MembershipSet

from detection import DATA, ROOT, data_config
from mia_tuner import sets
from blocks import refresh

RESULTS = ROOT / "bench" / "results" / "shift.json"
DETECTION = ROOT / "bench" / "results" / "detection.json"
SETS = [("wikimia24", f"WikiMIA_length{n}") for n in (32, 64, 128, 256)] + \
       [("wikimia", str(n)) for n in (32, 64, 128)]
POOLED = sets.DEBIASED
MODELS = ["smollm2-135m-instruct", "gemma-3-270m"]
SCORE_BASED = ["loss", "zlib", "lowercase", "ref", "min-k%", "min-k%++", "neighbor"]


def load(dataset: str, split: str) -> MembershipSet:
    return load_membership_set(data_config(dataset, split))


def debiased_wikimia24(words: int = 32, seed: int = 0) -> MembershipSet:
    """The package's `wikimia24:debiased` set, read from ../shared/data."""
    return sets.debiased_wikimia24(DATA, words, seed)


def variants(data: MembershipSet) -> dict[str, MembershipSet]:
    data, _ = deduplicate(data)
    return {"shipped": data, "masked": mask_set(data), "debiased": debias(data)}


def model_rows(detection: list[dict], split: str) -> list[dict]:
    """MIA-Tuner's and the best score-based method's row per model on a WikiMIA-24 split."""
    rows = []
    for model in MODELS:
        mine = [r for r in detection if r["model"] == model and r["dataset"] == "wikimia24"
                and r["split"] == split]
        tuner = [r for r in mine if r["method"] == "mia-tuner"]
        scored = [r for r in mine if r["method"] in SCORE_BASED]
        if scored:
            best = max(scored, key=lambda r: r["auroc"])
            rows.append({"method": f"best score-based ({best['method']})", "model": model, "auroc": best["auroc"]})
        rows += [{"method": "mia-tuner", "model": model, "auroc": r["auroc"]} for r in tuner]
    return rows


def main():
    detection = json.loads(DETECTION.read_text()) if DETECTION.exists() else []
    records = []
    measured = [(dataset, split, name, data) for dataset, split in SETS
                for name, data in variants(load(dataset, split)).items()]
    measured.append(("wikimia24", POOLED, "debiased", debiased_wikimia24()))
    for dataset, split, variant, data in measured:
        report = shift_report(data)
        base = {"dataset": dataset, "split": split, "variant": variant,
                "blind_auroc": round(report["blind_auroc"], 4), "year_auroc": round(report["year_auroc"], 4),
                "n_member": report["n_member"], "n_nonmember": report["n_nonmember"]}
        rows = [{"method": "blind (5-fold CV)", "model": None, "auroc": base["blind_auroc"]}]
        if dataset == "wikimia24" and (variant, split) in {("shipped", "WikiMIA_length32"), ("debiased", POOLED)}:
            rows += model_rows(detection, split)
        records += [{**base, **row, "date": time.strftime("%Y-%m-%d")} for row in rows]
        print(f"{dataset:9} {split:18} {variant:9} n={report['n_member']}+{report['n_nonmember']:<4} "
              f"blind {report['blind_auroc']:.3f}  year {report['year_auroc']:.3f}", flush=True)
    RESULTS.write_text(json.dumps(records, indent=1) + "\n")
    refresh()


if __name__ == "__main__":
    main()
