"""`mia-tuner scores`: every score-based method on a labelled set's test texts."""

from __future__ import annotations

from dataclasses import replace

from ..config import RunConfig
from .args import check_out_dir
from .options import (add_defence_option, add_method_options, add_overwrite_option, add_set_options, data_config,
                      labelled_set, method_config, model_config, named_set, named_target, print_result,
                      split_config)
from .fields import field_help


def add_parser(commands) -> None:
    scores = commands.add_parser("scores", help="run score-based methods on a labelled set")
    add_set_options(scores)
    add_method_options(scores)
    scores.add_argument("--no-cache", action="store_true", help="neither read nor write scores")
    scores.add_argument("--out", default=RunConfig.out, help=field_help(RunConfig, "out"))
    add_overwrite_option(scores)
    add_defence_option(scores)


def scores_config(args) -> RunConfig:
    return RunConfig.compose(model_config(args), data=data_config(args), split=split_config(args),
                             methods=method_config(args), out=args.out, cache_dir=args.cache_dir,
                             use_cache=not args.no_cache)


def with_named(config: RunConfig, named) -> RunConfig:
    """``config`` for a named set (options.named_target)."""
    model, reference = named_target(config.model, config.methods.reference, named)
    return replace(config, model=model, methods=replace(config.methods, reference=reference))


def run(args) -> None:
    from ..rundir import claim_run_dir, run_identity
    from ..run import checked_methods
    from ..suite.single import command_cell, run_single_cell

    config = scores_config(args)
    check_out_dir(config.out)
    named = named_set(args)
    config = with_named(config, named)
    data = labelled_set(args, named)
    checked_methods(config)  # nothing is written before every setting is checked
    identity = run_identity(config=config, data=data.fingerprint(), defence=args.defence)
    with claim_run_dir(config.out, "scores", identity, args.overwrite):
        print_result(run_single_cell(command_cell(config, data, defence=args.defence), config.out, data=data,
                                     named=named))
