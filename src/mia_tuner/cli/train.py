"""`mia-tuner train`: a MIA-Tuner detector trained on a labelled set, compared with every
baseline on the same test texts."""

from __future__ import annotations

from ..config import MethodConfig, OutputFolders
from .args import check_out_dir, method_names
from .fields import add_dataclass_options, field_help, values_from_args
from .options import (add_attack_options, add_defence_option, add_overwrite_option, add_set_options, data_config,
                      labelled_set, model_config, named_set, named_target, print_skipped, split_config)

TUNER_PREFIX = "tuner_"  # dests of the options generated from TunerConfig


def add_tuner_settings(parser) -> None:
    """--preset and every TunerConfig field but the two the split options set (--seed,
    --train-per-class), as `train` has them (bench/tuner_runs.py too)."""
    from ..suite.config import TunerVariant
    from ..tuner.config import PRESETS, TunerConfig
    from ..tuner.prompts import FALLBACK_TEMPLATES

    parser.add_argument("--preset", default=TunerVariant.preset, choices=list(PRESETS),
                        help=field_help(TunerVariant, "preset"))
    add_dataclass_options(parser, TunerConfig, prefix=TUNER_PREFIX, skip=("seed", "train_per_class"),
                          rename={"learning_rate": "--lr"}, unset=tuple(PRESETS["default"]),
                          choices={"chat_template": sorted(FALLBACK_TEMPLATES)})


def tuner_settings(args) -> dict:
    """The TunerConfig fields ``add_tuner_settings`` read (None: the preset's)."""
    from ..tuner.config import TunerConfig

    return values_from_args(TunerConfig, args, prefix=TUNER_PREFIX)


def add_parser(commands) -> None:
    train = commands.add_parser("train", help="train a MIA-Tuner detector and compare it with the baselines")
    add_set_options(train)
    add_tuner_settings(train)
    add_attack_options(train, "the baselines compared with MIA-Tuner")
    train.add_argument("--no-compare", action="store_true", help="train and score MIA-Tuner only")
    train.add_argument("--restart", action="store_true",
                       help="ignore the checkpoint of an interrupted run in --out and start afresh")
    train.add_argument("--out", default=OutputFolders.train, help=field_help(OutputFolders, "train"))
    add_overwrite_option(train)
    add_defence_option(train)


def run(args) -> None:
    from ..config import RunConfig
    from ..rundir import claim_run_dir, run_identity
    from ..suite.config import TunerVariant
    from ..suite.single import command_cell, run_single_cell
    from ..tuner.api import ROW

    variant = TunerVariant(preset=args.preset, settings=tuner_settings(args))
    config = variant.config(args.split_max_train_per_class, args.split_seed)  # checked before any work
    check_out_dir(args.out)
    named = named_set(args)
    data = labelled_set(args, named)
    print_skipped(data)
    model, reference = named_target(model_config(args), args.reference, named)
    methods = MethodConfig(methods=method_names(args.methods))
    identity = run_identity(tuner=config, model=model, split=split_config(args), methods=methods,
                            reference=reference, compare=not args.no_compare,
                            data=data.fingerprint(), defence=args.defence)
    run_config = RunConfig.compose(model, data=data_config(args), split=split_config(args), methods=methods,
                                   reference=reference, out=args.out, cache_dir=args.cache_dir)
    # one cell: the baselines (unless --no-compare) on the untouched model, then MIA-Tuner, whose
    # detector and checkpoint live in --out
    cell = command_cell(run_config, data, tuner=[variant], defence=args.defence, scored=not args.no_compare,
                        artefact_dir=args.out, retrain=args.restart)
    with claim_run_dir(args.out, "train", identity, args.overwrite):
        result = run_single_cell(cell, args.out, data=data, named=named)
    record = result.record(ROW)
    h = record["history"]
    print(f"Trained {config.peft} ({record['mode']} pipeline) in {h['seconds']:.1f} s; "
          f"kept epoch {h['chosen_epoch']} of {config.epochs} ({h['selection']})\n")
    print(result.table)
    print(f"\nDetector: {record['detector']}\nRun directory: {result.out_dir}")
