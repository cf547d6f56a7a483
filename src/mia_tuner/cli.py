"""The `mia-tuner` command line. With no arguments it runs the offline demo."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import (DEVICES, DTYPES, QUANTIZATIONS, DataConfig, MethodConfig, ModelConfig, RunConfig,
                     SplitConfig, default_cache_dir)
from .cli_args import (check_out_dir, check_out_file, fraction, method_names, positive_int,
                       seed_value, share, shares, token_budget)
from .cli_benchmark import add_benchmark_parser, cmd_benchmark
from .cli_data import add_data_parser, cmd_data
from .cli_defend import add_defence_option, add_defend_parser, cmd_defend, with_defence
from .cli_fields import add_dataclass_options, field_help, values_from_args
from .errors import MiaTunerError
from .rundir import claim_run_dir, run_identity


SPLIT_PREFIX = "split_"
METHOD_PREFIX = "method_"


def add_model_options(parser: argparse.ArgumentParser, default: str | None = ModelConfig.name,
                      skip=()) -> None:
    """--model (required when ``default`` is None) and every other ModelConfig field."""
    parser.add_argument("--model", default=default, required=default is None,
                        help=field_help(ModelConfig, "name"))
    add_dataclass_options(parser, ModelConfig, prefix="", skip=("name", *skip),
                          choices={"device": DEVICES, "dtype": DTYPES, "quantization": QUANTIZATIONS})


def add_data_options(parser: argparse.ArgumentParser, required: bool = True):
    parser.add_argument("--data", required=required,
                        help="save_to_disk folder, .jsonl/.json/.csv/.parquet file, hub name, or a set "
                             "name: wikimia24:<32|64|128|256>, wikimia:<n>, wikimia24:debiased, "
                             "controlled:<model>[:<n>], smoke")
    parser.add_argument("--data-root", help="folder with local copies of the named sets "
                                            "(wikimia24/, wikimia/; env MIA_TUNER_DATA); else the hub")
    add_dataclass_options(parser, DataConfig, prefix="", skip=("path",))


SPLIT_TYPES = {"seed": seed_value, "train_fraction": fraction, "max_train_per_class": positive_int,
               "max_test_per_class": positive_int}
SPLIT_FLAGS = {"max_train_per_class": "--train-per-class", "max_test_per_class": "--test-per-class"}


def add_split_options(parser: argparse.ArgumentParser, skip=()):
    """SplitConfig's fields; ``--paper-split`` is ``--no-fill-test-first``."""
    add_dataclass_options(parser, SplitConfig, prefix=SPLIT_PREFIX, skip=skip, rename=SPLIT_FLAGS,
                          types=SPLIT_TYPES, choices={"group_by": ["event"]})
    if "fill_test_first" not in skip:
        parser.add_argument("--paper-split", dest=SPLIT_PREFIX + "fill_test_first", action="store_false",
                            help="always cut at --train-fraction, as the official code does, even when a "
                                 "large set could fill the test part to its cap")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """Every MethodConfig field (score-based methods' settings)."""
    add_dataclass_options(parser, MethodConfig, prefix=METHOD_PREFIX, types={
        "k": share, "k_sweep": shares, "num_neighbors": positive_int, "neighbor_fraction": share,
        "recall_shots": positive_int, "batch_size": positive_int, "max_tokens": token_budget,
        "fused_k": shares})


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of another configuration found in --out (without it, "
                             "such a folder is refused; the same configuration always continues there)")


def add_cache_options(parser: argparse.ArgumentParser):
    parser.add_argument("--cache-dir", default=str(default_cache_dir()),
                        help="models, built sets and score cache (env MIA_TUNER_CACHE)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mia-tuner", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does (INFO level)")
    commands = parser.add_subparsers(dest="command")

    demo = commands.add_parser("demo", help="offline controlled-membership demo (the default)")
    demo.add_argument("--out", default="runs/demo", help="the run directory")
    demo.add_argument("--device", default=ModelConfig.device, choices=DEVICES,
                      help=field_help(ModelConfig, "device"))
    add_cache_options(demo)
    add_overwrite_option(demo)

    scores = commands.add_parser("scores", help="run score-based methods on a labelled set")
    add_model_options(scores)
    add_data_options(scores)
    add_split_options(scores)
    add_cache_options(scores)
    add_method_options(scores)
    scores.add_argument("--no-cache", action="store_true", help="neither read nor write scores")
    scores.add_argument("--out", default=RunConfig.out, help=field_help(RunConfig, "out"))
    add_overwrite_option(scores)
    add_defence_option(scores)

    models = commands.add_parser("models", help="offline models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    model_commands.add_parser("list", help="the offline models and their state")
    fetch = model_commands.add_parser("fetch", help="download and prepare offline models")
    fetch.add_argument("names", nargs="*", help="default: all offline models")

    add_data_parser(commands, add_data_options, add_model_options)
    commands.add_parser("methods", help="list the registered methods")
    add_train_parser(commands)
    add_detect_parser(commands)
    add_defend_parser(commands, add_model_options, add_data_options, add_cache_options, add_split_options,
                      add_overwrite_option)
    add_benchmark_parser(commands, add_cache_options)
    return parser


TUNER_PREFIX = "tuner_"  # dests of the options generated from TunerConfig


def add_train_parser(commands) -> None:
    """`train`: MIA-Tuner on a labelled set, compared with the baselines on the same texts."""
    from .tuner.config import BASE_SCORES, MODES, PEFT_KINDS, PRESETS, TunerConfig
    from .tuner.prompts import FALLBACK_TEMPLATES

    train = commands.add_parser("train", help="train a MIA-Tuner detector and compare it with the baselines")
    for add in (add_model_options, add_data_options, add_split_options, add_cache_options):
        add(train)
    train.add_argument("--preset", default="default", choices=list(PRESETS),
                       help="optimisation settings (--lr, --epochs, --batch-per-class) unless given")
    # every TunerConfig field but the two the split options set (--seed, --train-per-class)
    add_dataclass_options(train, TunerConfig, prefix=TUNER_PREFIX, skip=("seed", "train_per_class"),
                          rename={"learning_rate": "--lr"}, unset=tuple(PRESETS["default"]),
                          types={"epochs": positive_int, "batch_per_class": positive_int,
                                 "num_virtual_tokens": positive_int, "max_tokens": token_budget},
                          choices={"mode": MODES, "peft": PEFT_KINDS, "base_score": BASE_SCORES,
                                   "chat_template": sorted(FALLBACK_TEMPLATES)})
    train.add_argument("--methods", default="all", help="baselines to compare with, or all")
    train.add_argument("--reference", help="reference model for `ref`")
    train.add_argument("--no-compare", action="store_true", help="train and score MIA-Tuner only")
    train.add_argument("--restart", action="store_true",
                       help="ignore the checkpoint of an interrupted run in --out and start afresh")
    train.add_argument("--out", default="runs/mia-tuner", help="the run directory (the detector in its detector/)")
    add_overwrite_option(train)
    add_defence_option(train)


def add_detect_parser(commands) -> None:
    """`detect`: score texts with a trained detector."""
    detect = commands.add_parser("detect", help="score texts with a trained MIA-Tuner detector")
    detect.add_argument("--detector", required=True, help="a detector directory written by `train`")
    detect.add_argument("--trust-unverified-detector", action="store_true",
                        help="use a detector that records no hashes of its files (saved by mia-tuner "
                             "< 0.2) without checking them: damage to its adapter would go unnoticed")
    source = detect.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a text to score (repeatable)")
    source.add_argument("--file", help=".jsonl/.json/.csv/.parquet file of texts")
    add_dataclass_options(detect, DataConfig, prefix="", skip=("path", "split", "label_column", "dedupe"))
    detect.add_argument("--model", help="the base model (default: the name the detector records)")
    add_dataclass_options(detect, ModelConfig, prefix="", skip=("name", "device_map", "quantization", "gguf_file"),
                          choices={"device": DEVICES, "dtype": DTYPES})
    detect.add_argument("--out", help="write one JSON line per text here")
    add_defence_option(detect)
    add_cache_options(detect)


def model_config(args) -> ModelConfig:
    return ModelConfig(name=args.model, **values_from_args(ModelConfig, args, prefix=""))


def data_config(args) -> DataConfig:
    return DataConfig(path=args.data, **values_from_args(DataConfig, args, prefix=""))


def split_config(args) -> SplitConfig:
    return SplitConfig(**values_from_args(SplitConfig, args, prefix=SPLIT_PREFIX))


def scores_config(args) -> RunConfig:
    return RunConfig.compose(model_config(args), data=data_config(args), split=split_config(args),
                             methods=MethodConfig(**values_from_args(MethodConfig, args, prefix=METHOD_PREFIX)),
                             out=args.out, cache_dir=args.cache_dir, use_cache=not args.no_cache)


def named_set(args):
    """The NamedSet of ``--data`` when it is a set name (mia_tuner.sets), else None."""
    from . import sets

    if not sets.is_named(args.data):
        return None
    named = sets.resolve(args.data, root=args.data_root, cache_dir=args.cache_dir,
                         device=getattr(args, "device", "auto"))
    if named.model:
        print(f"{args.data}: target model {named.model} (after injection), reference {named.reference}")
    return named


def named_target(model: ModelConfig, reference: str | None, named) -> tuple[ModelConfig, str | None]:
    """(target, reference) for a named set: its injected model and the model before injection
    where the set implies them (a reference given by the user stays)."""
    from dataclasses import replace

    if named is None or not named.model:
        return model, reference
    return replace(model, name=named.model), reference or named.reference


def with_named(config: RunConfig, named) -> RunConfig:
    """``config`` for a named set (named_target)."""
    from dataclasses import replace

    model, reference = named_target(config.model, config.methods.reference, named)
    return replace(config, model=model, methods=replace(config.methods, reference=reference))


def print_skipped(data) -> None:
    """Say on screen how many rows --skip-invalid dropped."""
    from .data.validation import describe_skipped

    line = describe_skipped(data.info.get("n_skipped"))
    if line:
        print(line)


def print_result(result, grouped: bool = False) -> None:
    """The run's hygiene, split and table (``grouped``: rows by what a user needs for them)."""
    from .data import format_hygiene

    print_skipped(result.data)
    print(format_hygiene(result.hygiene))
    print(result.split_summary() + "\n")
    print(result.grouped_table() if grouped else result.table)
    print(f"\nRun directory: {result.out_dir}")


def cmd_scores(args) -> None:
    from .data import load_membership_set
    from .run import checked_methods, run_scores

    config = scores_config(args)
    check_out_dir(config.out)
    named = named_set(args)
    config = with_named(config, named)
    data = named.data if named else load_membership_set(config.data)
    checked_methods(config)  # nothing is written before every setting is checked
    identity = run_identity(config=config, data=data.fingerprint(), defence=args.defence)
    with claim_run_dir(config.out, "scores", identity, args.overwrite):
        loaded = None
        if args.defence:
            from .models import load_model

            loaded = with_defence(args, load_model(config.model, cache_dir=config.cache_dir))
        print_result(run_scores(config, loaded=loaded, data=data))


def cmd_models(args) -> None:
    from .models import offline

    if args.models_command == "list":
        for row in offline.list_models():
            print(f"{row['name']:<24} {row['kind']:<8} {row['state']:<12} {row.get('path', '')}")
        return
    for name in args.names or [row["name"] for row in offline.list_models()]:
        print(f"{name}: ready at {offline.prepare(name)}")


def cmd_train(args) -> None:
    from .data import load_membership_set
    from .models import load_model
    from .tuner.api import train_detector
    from .tuner.config import TunerConfig

    config = TunerConfig.from_preset(args.preset, **values_from_args(TunerConfig, args, prefix=TUNER_PREFIX),
                                     train_per_class=args.split_max_train_per_class, seed=args.split_seed)
    check_out_dir(args.out)
    named = named_set(args)
    data = named.data if named else load_membership_set(data_config(args))
    print_skipped(data)
    model, reference = named_target(model_config(args), args.reference, named)
    methods = MethodConfig(methods=method_names(args.methods))
    identity = run_identity(tuner=config, model=model, split=split_config(args), methods=methods,
                            reference=reference, compare=not args.no_compare,
                            data=data.fingerprint(), defence=args.defence)
    with claim_run_dir(args.out, "train", identity, args.overwrite):
        loaded = with_defence(args, load_model(model, cache_dir=args.cache_dir))
        result = train_detector(
            loaded, data, config, out_dir=args.out, compare_methods=not args.no_compare,
            model_config=model,
            split_config=split_config(args),
            reference=reference, cache_dir=args.cache_dir,
            methods=methods, resume=not args.restart)
    h = result.history
    print(f"Trained {config.peft} ({result.detector.pipeline.mode} pipeline) in {h.seconds:.1f} s; "
          f"kept epoch {h.chosen_epoch} of {config.epochs} ({h.selection})\n")
    print(result.table)
    print(f"\nDetector: {result.detector_dir}\nRun directory: {result.out_dir}")


def detect_texts(args) -> list[str]:
    """The texts of `detect`: --text values or a column of --file, validated like `scores`."""
    from .data.loading import read_columns
    from .data.validation import validate_texts
    from .errors import DataError

    if args.text is not None:
        texts, numbers, unit = list(args.text), None, "--text"
    else:
        columns, _, info = read_columns(args.file, None)
        if args.text_column not in columns:
            raise DataError(f"{args.file}: no column {args.text_column!r}; available: "
                            f"{sorted(columns)} (choose one with --text-column)")
        texts = list(columns[args.text_column])
        numbers, unit = (info["row_lines"], "line") if "row_lines" in info else (None, "row")
    source = "the --text values" if args.text is not None else args.file
    try:
        kept, _, skipped = validate_texts(texts, skip_invalid=args.skip_invalid,
                                          row_numbers=numbers, unit=unit)
    except DataError as error:
        raise DataError(f"{source}: {error}") from None
    if skipped:
        print(f"Skipped {skipped} row(s) with a missing or empty text (--skip-invalid)")
    return kept


def scorable_texts(texts: list[str], detector, skip_invalid: bool) -> list[str]:
    """Before any forward pass: the texts ``detector`` can score (the base pipeline needs two
    tokens; --skip-invalid skips shorter ones), texts it will cut announced."""
    from .data.validation import MIN_TOKENS, check_token_counts

    kept, skipped = check_token_counts(
        texts, detector.pipeline.tokenizer, max_tokens=detector.pipeline.config.max_tokens,
        skip_invalid=skip_invalid, what="the texts to score",
        min_tokens=MIN_TOKENS if detector.pipeline.mode == "base" else 1)
    if skipped:
        print(f"Skipped {skipped} text(s) of fewer than {MIN_TOKENS} tokens (--skip-invalid)")
    return [texts[i] for i in kept]


def cmd_detect(args) -> None:
    import json

    from .models import load_model
    from .tuner.detector import load_detector, read_detector_info

    check_out_file(args.out)
    texts = detect_texts(args)
    trust = args.trust_unverified_detector
    info = read_detector_info(args.detector, trust)
    name = args.model or info["base_model"]["name"]
    loaded = load_model(ModelConfig(name=name, device=args.device, dtype=args.dtype,
                                    trust_remote_code=args.trust_remote_code),
                        cache_dir=args.cache_dir)
    detector = load_detector(args.detector, with_defence(args, loaded), trust)
    texts = scorable_texts(texts, detector, args.skip_invalid)
    scores = detector.score(texts)
    rows = [{"text": t, "score": float(s), "member": bool(s >= detector.threshold),
             "threshold": detector.threshold} for t, s in zip(texts, scores)]
    for row in rows:
        preview = row["text"].replace("\n", " ")[:60]
        print(f"{row['score']:.6f}\t{'member' if row['member'] else 'non-member'}\t{preview}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def dispatch(args) -> None:
    if args.command in (None, "demo"):
        from .demo import demo_identity, run_demo

        out = getattr(args, "out", "runs/demo")
        check_out_dir(out)
        with claim_run_dir(out, "demo", demo_identity(), getattr(args, "overwrite", False)):
            print_result(run_demo(out=out, cache_dir=getattr(args, "cache_dir", None),
                                  device=getattr(args, "device", "auto")), grouped=True)
    elif args.command == "scores":
        cmd_scores(args)
    elif args.command == "models":
        cmd_models(args)
    elif args.command == "data":
        cmd_data(args, data_config)
    elif args.command == "train":
        cmd_train(args)
    elif args.command == "detect":
        cmd_detect(args)
    elif args.command == "defend":
        cmd_defend(args, model_config, data_config, split_config, named_set, named_target)
    elif args.command == "benchmark":
        cmd_benchmark(args)
    elif args.command == "methods":
        from .methods import available_methods

        print("\n".join(available_methods()))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        dispatch(args)
    except MiaTunerError as error:
        print(f"mia-tuner: {'stopped' if error.exit_code == 130 else 'error'}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("mia-tuner: stopped (Ctrl-C)", file=sys.stderr)
        return 130
    except OSError as error:  # a file system refusal (permissions, full disk, ...): no traceback
        print(f"mia-tuner: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
