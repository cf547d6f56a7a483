"""`mia-tuner defend`: a safeguard trained, and every attack measured before and after it.

The options of `defend` are generated from ``DefenceConfig``'s fields (``cli.fields``: names,
types, defaults and help are read from the dataclass, never written twice). The `--defence DIR`
option of `scores`, `train` and `detect` is in ``cli.options``.
"""

from __future__ import annotations

from pathlib import Path

from ..config import OutputFolders
from ..safeguards.config import TEST_PER_CLASS, DefenceConfig
from .args import positive_int
from .fields import add_dataclass_options, field_help, values_from_args
from .options import (add_attack_options, add_cache_options, add_data_options, add_model_options, add_overwrite_option,
                      add_split_options, data_config, labelled_set, model_config, named_set, named_target,
                      split_config)

PREFIX = "defence_"  # dests of the generated options (the split has its own --seed)
RENAMED = {"learning_rate": "--lr", "train_per_class": "--defender-per-class", "seed": "--defence-seed"}


def add_parser(commands) -> None:
    defend = commands.add_parser(
        "defend", help="train a safeguard and measure every attack before and after it")
    for add in (add_model_options, add_data_options, add_cache_options):
        add(defend)
    # the split's train part holds the defender's and the attacker's texts (sized from them)
    add_split_options(defend, skip=("max_train_per_class", "max_test_per_class"))
    defend.add_argument("--test-per-class", type=positive_int, default=TEST_PER_CLASS,
                        help=f"held-out texts per class, seen by neither defender nor attacker (default: "
                             f"{TEST_PER_CLASS})")
    add_defence_settings(defend)
    add_attack_options(defend, "the score-based attacks measured before and after")
    defend.add_argument("--mmlu", help="MMLU-layout CSV file or folder, or a hub name (cais/mmlu)")
    defend.add_argument("--mmlu-limit", type=int, help="use the first N questions")
    defend.add_argument("--out", default=OutputFolders.defend, help=field_help(OutputFolders, "defend"))
    add_overwrite_option(defend)


def add_defence_settings(parser, skip=("batch_size",)) -> None:
    """Every DefenceConfig field as an option, as `defend` has them (bench/safeguards.py too)."""
    add_dataclass_options(parser, DefenceConfig, prefix=PREFIX, skip=skip, rename=RENAMED)


def defence_settings(args) -> dict:
    """The DefenceConfig fields ``add_defence_settings`` read."""
    return values_from_args(DefenceConfig, args, prefix=PREFIX)


def run(args) -> None:
    from dataclasses import replace

    from ..config import MethodConfig, RunConfig
    from ..rundir import claim_run_dir, run_identity
    from ..safeguards import mmlu
    from ..suite.single import defence_cell, run_one_cell
    from .args import check_out_dir, method_names

    config = DefenceConfig(**defence_settings(args))
    check_out_dir(args.out)
    questions = mmlu.load_questions(args.mmlu, args.mmlu_limit) if args.mmlu else None
    named = named_set(args)
    data = labelled_set(args, named)
    model, reference = named_target(model_config(args), args.reference, named)
    split = replace(split_config(args), max_test_per_class=args.test_per_class)
    methods = MethodConfig(methods=method_names(args.methods))
    identity = run_identity(defence=config, model=model, split=split, methods=methods,
                            reference=reference, data=data.fingerprint(),
                            mmlu=[args.mmlu, args.mmlu_limit])
    run_config = RunConfig.compose(model, data=data_config(args), split=split, methods=methods, reference=reference,
                                   out=args.out, cache_dir=args.cache_dir)
    # one cell: the safeguard alone (the cell scores every attack before and after it), its
    # defence and report in --out; a controlled set brings the model before injection: releasing
    # it is the perfect defence
    cell = defence_cell(run_config, data, config, args.out, questions=questions)
    with claim_run_dir(args.out, "defend", identity, args.overwrite):
        _, records = run_one_cell(cell, args.out, data=data, named=named)
    record = next(r for r in records if r["kind"] == "safeguard")
    print(f"Defence against {config.against} ({config.peft}); attacks on {record['n_member']} + "
          f"{record['n_nonmember']} held-out texts (members + non-members)\n")
    print(record["table"])
    print(f"\nDefence: {record['defence_dir']}\nReport: {Path(args.out) / 'report.json'}")
