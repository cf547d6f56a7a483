"""What hiding the members for good would cost: a controlled set's model before injection as the
released model (issue: safeguards).

On a controlled-membership set the membership signal is exactly what the injection put into
the model, and the model before injection is at hand. Releasing that model is the perfect
defence — every member becomes a text the model never trained on — so its utility cost is
the price of hiding the members entirely by undoing what they did: perplexity on the general
text and mean KL(injected ‖ released, i.e. before-injection) per token, measured with the same
`safeguards.utility.perplexity_and_kl` as every defence. The one-pass attacks are scored on it
too, on the same 200 + 200 held-out texts and the attacker's 80 + 80 as `bench/safeguards.py`
(its split, rebuilt here), so the rows sit beside the defences' in bench/results/safeguards.json
(safeguard `oracle:pre-injection`), with the package's `safeguards.floor` (the methods that
mean something on the released model, the utility of releasing it), which `mia-tuner defend`
reports on any controlled set beside the defence (this script records it without training one). Ref is left out: its reference would be the released model
itself, a score of 0 for every text. No defender can release this model (it needs the model
before training); it measures where the goals of the issue lie, not a method.

    .venv/bin/python bench/safeguard_floor.py --model gemma-3-270m --set "controlled:{model}:600"
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from detection import merge
from safeguards import KEY, RESULTS
from mia_tuner.config import DEFAULT_SEED, MethodConfig, ModelConfig, RunConfig, SplitConfig, default_cache_dir
from mia_tuner.data.split import EvaluationSplit
from mia_tuner.models import load_model
from mia_tuner.run import score_split, select_methods
from mia_tuner.safeguards.api import defence_split
from mia_tuner.safeguards.config import DefenceConfig
from mia_tuner.safeguards.floor import floor_methods, released_utility
from mia_tuner.safeguards.report import metric_row, utility_line
from mia_tuner import sets

SAFEGUARD = "oracle:pre-injection"
ONE_PASS = ["loss", "zlib", "min-k%", "min-k%++", "lowercase"]


def cell_split(data, defence: DefenceConfig, test_per_class: int, seed: int):
    """`defence_split` of `defend` with these settings, as bench/safeguards.py's suite cell
    makes it: (settings, split, defender's texts, their validation texts, attacker's split)."""
    split_config = SplitConfig(seed=seed, max_test_per_class=test_per_class, fill_test_first=True)
    return defence_split(data, defence, split_config)


def attacker_split(data, defence: DefenceConfig, test_per_class: int, seed: int) -> EvaluationSplit:
    """The attacker's texts and the held-out test texts of that split."""
    return cell_split(data, defence, test_per_class, seed)[4]


def attack_scores(model_name: str, split: EvaluationSplit, seed: int, cache_dir: str):
    """The one-pass attacks and `fused` over them on ``model_name``: (its RunConfig, the loaded
    model, the methods, their scores)."""
    methods = MethodConfig(methods=ONE_PASS + ["fused"], fused_features=ONE_PASS)
    run_config = RunConfig.compose(ModelConfig(name=model_name), methods=methods, split=SplitConfig(seed=seed),
                                   cache_dir=cache_dir)
    loaded = load_model(run_config.model, cache_dir=cache_dir)
    chosen = select_methods(run_config)
    scores, _, _ = score_split(run_config, loaded, split, chosen)
    return run_config, loaded, chosen, scores


def set_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options naming the controlled set and where results go (shared with safeguard_seen.py)."""
    parser.add_argument("--model", required=True, help="an offline model whose controlled set is built")
    parser.add_argument("--set", default="controlled:{model}:600",
                        help="controlled:{model}:<n>, the set of bench/safeguards.py ({model}: the --model)")
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()))
    return parser


def controlled_set(parser: argparse.ArgumentParser, args):
    """The built controlled set ``args.set`` (controlled:{model}:<n>, {model} the --model); any
    other set is refused (the defences' split is that of the large controlled sets)."""
    name = args.set.replace("{model}", args.model)
    if not name.startswith("controlled:") or not sets.is_named(name):
        parser.error(f"--set must be controlled:{{model}}:<n> (e.g. controlled:{{model}}:600), got {args.set!r}")
    return sets.resolve(name, cache_dir=args.cache_dir, build=False)


def main():
    parser = set_arguments(argparse.ArgumentParser())
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    started = time.perf_counter()
    named = controlled_set(parser, args)
    split = attacker_split(named.data, DefenceConfig(seed=args.seed), args.test_per_class, args.seed)
    run_config, injected, methods, before = attack_scores(named.model, split, args.seed, args.cache_dir)
    # "before" is the injected model (what the publisher has), "after" the one released here
    released_config = ModelConfig(name=named.reference)
    released = load_model(released_config, cache_dir=args.cache_dir)
    methods = floor_methods(methods, run_config.methods.reference, named.reference)
    after, _, _ = score_split(replace(run_config, model=released_config), released, split, methods)
    labels = np.array(split.test.labels)
    rows = [metric_row(m.label, labels, before[m.label], after[m.label], False) for m in methods]
    u, seconds = released_utility(released, injected), time.perf_counter() - started
    records = [{"model": args.model, "dataset": named.dataset, "split": named.split, "safeguard": SAFEGUARD,
                "method": r["method"], "adaptive": False,
                **{k: round(float(v), 4) for k, v in r.items() if k.startswith(("auroc", "tpr"))},
                "n_member": split.test.n_member, "n_nonmember": split.test.n_nonmember,
                "ppl_before": round(u.ppl_before, 4), "ppl_after": round(u.ppl_after, 4), "kl": round(u.kl, 5),
                "greedy_agreement": u.greedy_agreement, "run_seconds": round(seconds, 1),
                "date": time.strftime("%Y-%m-%d %H:%M")} for r in rows]
    for r in records:
        print(f"{r['method']}: AUROC {r['auroc_before']:.3f} -> {r['auroc_after']:.3f} "
              f"[{r['auroc_after_low']:.3f}, {r['auroc_after_high']:.3f}]; TPR@1%FPR "
              f"{r['tpr_at_1_fpr_before']:.3f} -> {r['tpr_at_1_fpr_after']:.3f}")
    print(f"{utility_line('perplexity', u)}" + ("" if u.greedy_agreement is None else
          f", identical greedy answers {u.greedy_agreement:.0%}") + f"; {seconds:.0f} s")
    if not args.no_record:
        merge(records, RESULTS, KEY)


if __name__ == "__main__":
    main()
