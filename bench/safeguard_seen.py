"""Does a trained defence hide the texts it never saw, or only those it trained on? (issue:
safeguards: "a defence that only hides the texts it was trained on is reported as such").

Scores the one-pass attacks before and after a saved defence (an artefact of `defend` or of a
bench/safeguards.py cell) on three parts of its controlled set: the defender's training texts,
the defender's validation texts and the 200 + 200 held-out test texts. The split is rebuilt
from the settings saved in the artefact and checked against the SHA-256 of every text it
records having trained on, so a defence and a split that do not belong together are refused.
Rows go to bench/results/safeguard_seen.json, one per (model, safeguard, part, attack).

    .venv/bin/python bench/safeguard_seen.py --model smollm2-135m-instruct --set "controlled:{model}:600" \
        --defence runs/bench/suites/safeguards/cells/<cell>/defence-shift-lora-a4/defence --safeguard defence-scores:shift-lora-a4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from detection import merge
from safeguard_floor import ONE_PASS, cell_split, controlled_set, set_arguments
from mia_tuner.config import MethodConfig, ModelConfig, RunConfig, SplitConfig
from mia_tuner.data.split import EvaluationSplit
from mia_tuner.errors import DataError
from mia_tuner.models import load_model
from mia_tuner.run import score_split, select_methods
from mia_tuner.safeguards.report import metric_row
from mia_tuner.safeguards.artefact import apply_defence, read_defence_info, text_sha256
from mia_tuner.safeguards.config import DefenceConfig

RESULTS = Path(__file__).parent / "results" / "safeguard_seen.json"
KEY = ("model", "dataset", "safeguard", "part", "method")


def defence_parts(data, info: dict, test_per_class: int) -> dict:
    """The defender's training and validation texts and the held-out test texts of the split the
    defence in ``info`` was trained on, checked against the texts it records."""
    config = DefenceConfig.from_dict(info["config"])
    _, _, defender, validation, attacker = cell_split(data, config, test_per_class, config.seed)
    seen = set(info["trained_on"])
    parts = {"defender-train": defender, "defender-validation": validation}
    parts = {name: part for name, part in parts.items() if part is not None}  # no validation part: none
    for name, part in parts.items():
        missing = sum(text_sha256(t) not in seen for t in part.texts)
        if missing:
            raise DataError(f"{missing} of the rebuilt {name} texts are not among those the defence records "
                            "having trained on: this defence was not trained on this set with these settings")
    if any(text_sha256(t) in seen for t in attacker.test.texts):
        raise DataError("some held-out test texts are among those the defence trained on")
    return {**parts, "held-out test": attacker.test}


def one_pass_scores(loaded, part, train_part, seed: int, cache_dir: str) -> dict:
    """The one-pass attacks on ``part`` (through the score cache, keyed by the model's fingerprint)."""
    config = RunConfig.compose(ModelConfig(name=loaded.name), methods=MethodConfig(methods=ONE_PASS),
                               split=SplitConfig(seed=seed), cache_dir=cache_dir)
    scores, _, _ = score_split(config, loaded, EvaluationSplit(train=train_part, test=part), select_methods(config))
    return scores


def main():
    parser = set_arguments(argparse.ArgumentParser())
    parser.add_argument("--defence", required=True, help="a saved defence's folder (defence.json, adapter or prompt)")
    parser.add_argument("--safeguard", required=True, help="the name of its rows, e.g. defence-scores:shift-lora-a4")
    args = parser.parse_args()
    started = time.perf_counter()
    named = controlled_set(parser, args)
    info = read_defence_info(args.defence)
    parts = defence_parts(named.data, info, args.test_per_class)
    seed = DefenceConfig.from_dict(info["config"]).seed
    model_config = ModelConfig(name=named.model)
    undefended = load_model(model_config, cache_dir=args.cache_dir)
    before = {name: one_pass_scores(undefended, part, parts["defender-train"], seed, args.cache_dir)
              for name, part in parts.items()}
    defended = apply_defence(args.defence, load_model(model_config, cache_dir=args.cache_dir))
    records = []
    for name, part in parts.items():
        after = one_pass_scores(defended, part, parts["defender-train"], seed, args.cache_dir)
        labels = np.array(part.labels)
        for method in ONE_PASS:
            row = metric_row(method, labels, before[name][method], after[method], False)
            records.append({"model": args.model, "dataset": named.dataset, "split": named.split,
                            "safeguard": args.safeguard, "part": name, "method": method,
                            **{k: round(float(v), 4) for k, v in row.items() if k.startswith(("auroc", "tpr"))},
                            "n_member": part.n_member, "n_nonmember": part.n_nonmember,
                            "date": time.strftime("%Y-%m-%d %H:%M")})
            r = records[-1]
            print(f"{name} ({part.n_member} + {part.n_nonmember}), {method}: AUROC {r['auroc_before']:.3f} -> "
                  f"{r['auroc_after']:.3f} [{r['auroc_after_low']:.3f}, {r['auroc_after_high']:.3f}]")
    print(f"{time.perf_counter() - started:.0f} s")
    if not args.no_record:
        merge(records, RESULTS, KEY)


if __name__ == "__main__":
    main()
