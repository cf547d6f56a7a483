"""The option groups several commands share (model, data, split, methods, cache, output) and
the configurations read back from them: every command builds its parser and its configuration
from these, so an option means the same thing wherever it appears."""

from __future__ import annotations

import argparse

from ..config import DataConfig, MethodConfig, ModelConfig, SplitConfig, default_cache_dir
from .fields import add_dataclass_options, field_help, values_from_args

SPLIT_PREFIX = "split_"
METHOD_PREFIX = "method_"
SPLIT_FLAGS = {"max_train_per_class": "--train-per-class", "max_test_per_class": "--test-per-class"}


def add_model_options(parser: argparse.ArgumentParser, default: str | None = ModelConfig.name,
                      skip=()) -> None:
    """--model (required when ``default`` is None) and every other ModelConfig field."""
    parser.add_argument("--model", default=default, required=default is None,
                        help=field_help(ModelConfig, "name"))
    add_dataclass_options(parser, ModelConfig, prefix="", skip=("name", *skip))


def add_data_options(parser: argparse.ArgumentParser, required: bool = True):
    parser.add_argument("--data", required=required,
                        help="save_to_disk folder, .jsonl/.json/.csv/.parquet file, hub name, or a set "
                             "name: wikimia24:<32|64|128|256>, wikimia:<n>, wikimia24:debiased, "
                             "controlled:<model>[:<n>], smoke")
    parser.add_argument("--data-root", help="folder with local copies of the named sets "
                                            "(wikimia24/, wikimia/; env MIA_TUNER_DATA); else the hub")
    add_dataclass_options(parser, DataConfig, prefix="", skip=("path",))


def add_split_options(parser: argparse.ArgumentParser, skip=()):
    """SplitConfig's fields; ``--paper-split`` is ``--no-fill-test-first``."""
    add_dataclass_options(parser, SplitConfig, prefix=SPLIT_PREFIX, skip=skip, rename=SPLIT_FLAGS)
    if "fill_test_first" not in skip:
        parser.add_argument("--paper-split", dest=SPLIT_PREFIX + "fill_test_first", action="store_false",
                            help="always cut at --train-fraction, as the official code does, even when a "
                                 "large set could fill the test part to its cap")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """Every MethodConfig field (score-based methods' settings)."""
    add_dataclass_options(parser, MethodConfig, prefix=METHOD_PREFIX)


def add_attack_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--methods and --reference of a command that scores methods beside what it trains
    (`train`'s baselines, `defend`'s attacks): MethodConfig's defaults and help."""
    parser.add_argument("--methods", default=",".join(MethodConfig().methods),
                        help=f"{what}: {field_help(MethodConfig, 'methods')}")
    parser.add_argument("--reference", default=MethodConfig.reference, help=field_help(MethodConfig, "reference"))


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of another configuration found in --out (without it, "
                             "such a folder is refused; the same configuration always continues there)")


def add_cache_options(parser: argparse.ArgumentParser):
    parser.add_argument("--cache-dir", default=str(default_cache_dir()),
                        help="models, built sets and score cache (env MIA_TUNER_CACHE)")


def add_defence_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--defence", help="a defence directory written by `defend`: run against the "
                                          "defended model")


def add_set_options(parser: argparse.ArgumentParser) -> None:
    """What a command that reads a labelled set takes: model, data, split, cache."""
    for add in (add_model_options, add_data_options, add_split_options, add_cache_options):
        add(parser)


# ---- the configurations, read back from the options ---------------------------------------------
def model_config(args) -> ModelConfig:
    return ModelConfig(name=args.model, **values_from_args(ModelConfig, args, prefix=""))


def data_config(args) -> DataConfig:
    return DataConfig(path=args.data, **values_from_args(DataConfig, args, prefix=""))


def split_config(args) -> SplitConfig:
    return SplitConfig(**values_from_args(SplitConfig, args, prefix=SPLIT_PREFIX))


def method_config(args) -> MethodConfig:
    return MethodConfig(**values_from_args(MethodConfig, args, prefix=METHOD_PREFIX))


def named_set(args):
    """The NamedSet of ``--data`` when it is a set name (mia_tuner.sets), else None."""
    from .. import sets

    if not sets.is_named(args.data):
        return None
    named = sets.resolve(args.data, root=args.data_root, cache_dir=args.cache_dir,
                         device=getattr(args, "device", "auto"))
    if named.model:
        print(f"{args.data}: target model {named.model} (after injection), reference {named.reference}")
    return named


def labelled_set(args, named=None):
    """The labelled texts of ``--data``: the named set's, or the file's (or hub set's)."""
    from ..data import load_membership_set

    return named.data if named else load_membership_set(data_config(args))


def named_target(model: ModelConfig, reference: str | None, named) -> tuple[ModelConfig, str | None]:
    """(target, reference) for a named set: its injected model and the model before injection
    where the set implies them (a reference given by the user stays)."""
    from dataclasses import replace

    if named is None or not named.model:
        return model, reference
    return replace(model, name=named.model), reference or named.reference


def with_defence(args, loaded):
    """``loaded`` with the defence of ``--defence`` applied (unchanged without it)."""
    if not getattr(args, "defence", None):
        return loaded
    from ..safeguards.artefact import apply_defence

    return apply_defence(args.defence, loaded)


# ---- what a command prints ----------------------------------------------------------------------
def print_skipped(data) -> None:
    """Say on screen how many rows --skip-invalid dropped."""
    from ..data.validation import describe_skipped

    line = describe_skipped(data.info.get("n_skipped"))
    if line:
        print(line)


def print_result(result, grouped: bool = False) -> None:
    """The run's hygiene, split and table (``grouped``: rows by what a user needs for them)."""
    from ..data import format_hygiene

    print_skipped(result.data)
    print(format_hygiene(result.hygiene))
    print(result.split_summary() + "\n")
    print(result.grouped_table() if grouped else result.table)
    print(f"\nRun directory: {result.out_dir}")
