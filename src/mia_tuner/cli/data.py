"""`mia-tuner data ...`: check a set (hygiene and shift), build a controlled-membership set,
build a WikiMIA-24-style set."""

from __future__ import annotations

from .args import at_least_two, check_out_dir, non_negative, seed_value, word_lengths
from .fields import add_dataclass_options, values_from_args
from ..data.wiki import ONLINE_DEFAULTS, WikiBuildConfig
from ..training.controlled import ControlledConfig
from ..training.injection_config import InjectionConfig
from .options import add_data_options, add_model_options, data_config

CHECK_EPILOG = """A DIR with several splits (a build-wiki output, WikiMIA-24) is checked split by split.
Shift: the blind baseline's cross-validated AUROC and the year-only heuristic's AUROC; 0.5 means
a model-free classifier finds nothing, near 1 means the set can be solved without the model."""


def add_check_parser(commands) -> None:
    check = commands.add_parser("check", help="hygiene report and shift measures of a labelled set",
                                epilog=CHECK_EPILOG)
    check.add_argument("source", nargs="?", help="same as --data")
    add_data_options(check, required=False)
    check.add_argument("--mask-dates", action="store_true", help="check the set with dates masked")
    check.add_argument("--paired", action="store_true", help="check the set's paired (topic-matched) part")
    check.add_argument("--folds", type=at_least_two, default=5, help="cross-validation folds of the blind baseline")


def add_controlled_parser(commands) -> None:
    controlled = commands.add_parser("controlled", help="build a controlled-membership set")
    add_model_options(controlled)
    controlled.add_argument("--out", required=True, help="folder of the built set (data.jsonl, card.json)")
    add_dataclass_options(controlled, ControlledConfig, prefix="controlled_", skip=("injection",))
    add_dataclass_options(controlled, InjectionConfig, prefix="injection_", skip=("seed",),
                          rename={"learning_rate": "--lr"})


def add_build_wiki_parser(commands) -> None:
    build = commands.add_parser(
        "build-wiki", help="build a WikiMIA-24-style set (online, or offline from a pages file)",
        description="Members: articles of '<Month Year> events by country' in the --members "
                    "months; non-members: the same for --non-members (after the model's cutoff).")
    build.add_argument("--members", required=True, help="month range, e.g. 2015-01:2016-12")
    build.add_argument("--non-members", required=True, help="month range, e.g. 2024-03:2024-12")
    build.add_argument("--out", required=True, help="folder of the built set (datasets folder, jsonl/, card.json)")
    build.add_argument("--pages", help="offline: JSONL of {title, categories, lead} (category pages included)")
    build.add_argument("--depth", type=int, default=WikiBuildConfig.depth, help="sub-category levels to follow")
    build.add_argument("--lengths", type=word_lengths, default=WikiBuildConfig.lengths, help="word-count buckets")
    build.add_argument("--nested", action="store_true",
                       help="WikiMIA style: a long text also feeds every shorter bucket")
    build.add_argument("--mask-dates", action="store_true", help="replace dates, years and ordinals")
    build.add_argument("--paired", action="store_true",
                       help="keep only events present in both ranges (same title once dates are masked)")
    build.add_argument("--seed", type=seed_value, default=WikiBuildConfig.seed,
                       help="seed of the per-length balancing draw")
    build.add_argument("--user-agent", default=ONLINE_DEFAULTS["user_agent"],
                       help="online: 'project/1.0 (contact)', required by Wikipedia")
    build.add_argument("--fetch-cache", help="online: cache of fetched pages (default: OUT/.fetch-cache)")
    build.add_argument("--min-interval", type=non_negative, default=ONLINE_DEFAULTS["min_interval"],
                       help="online: seconds between requests")
    build.add_argument("--language", default=ONLINE_DEFAULTS["language"], help="online: Wikipedia's language code")


def add_parser(commands) -> None:
    data = commands.add_parser("data", help="data sets: check, controlled, build-wiki")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    add_check_parser(data_commands)
    add_controlled_parser(data_commands)
    add_build_wiki_parser(data_commands)


def cmd_check(args) -> None:
    from .. import sets
    from ..data import deduplicate, format_hygiene, hygiene_report, load_membership_set
    from ..data.loading import available_splits
    from ..data.shift import debias, format_shift, shift_report
    from ..errors import DataError

    args.data = args.data or args.source
    if not args.data:
        raise DataError("data check needs a set: mia-tuner data check DIR (or --data PATH)")
    named = sets.is_named(args.data)
    splits = [args.split] if args.split or named else (available_splits(args.data) or [None])
    for split in splits:
        args.split = split
        if named:
            data = sets.resolve(args.data, root=args.data_root, cache_dir=getattr(args, "cache_dir", None)).data
        else:
            data = load_membership_set(data_config(args))
        if args.paired or args.mask_dates:
            data = debias(deduplicate(data)[0], mask=args.mask_dates, paired=args.paired)
        print(f"== {data.name}")
        print(format_hygiene(hygiene_report(data)))
        try:
            print(format_shift(shift_report(data, folds=args.folds)) + "\n")
        except DataError as error:  # a split too small to cross-validate: say so, go on
            print(f"Shift: not measured ({error})\n")


def cmd_build_wiki(args) -> None:
    from pathlib import Path

    from ..data.wiki import OfflinePages, OnlinePages, build_wiki

    config = WikiBuildConfig(members=args.members, non_members=args.non_members, depth=args.depth,
                             lengths=args.lengths,
                             nested=args.nested, mask_dates=args.mask_dates, paired=args.paired,
                             seed=args.seed)
    if args.pages:
        source = OfflinePages(args.pages)
    else:
        source = OnlinePages(args.fetch_cache or Path(args.out) / ".fetch-cache",
                             user_agent=args.user_agent, language=args.language,
                             min_interval=args.min_interval)
    card = build_wiki(source, config, args.out)
    for length, counts in card["lengths"].items():
        print(f"length {length}: {counts['member']} members + {counts['nonmember']} non-members")
    print(f"Saved to {args.out} (datasets folder, jsonl/, card.json)")


def run(args) -> None:
    if args.data_command == "check":
        cmd_check(args)
        return
    if args.data_command == "build-wiki":
        cmd_build_wiki(args)
        return
    from ..training.controlled import build_controlled

    config = ControlledConfig(**values_from_args(ControlledConfig, args, prefix="controlled_"),
                              injection=values_from_args(InjectionConfig, args, prefix="injection_"))
    config.injection_config()  # validates the settings before anything is loaded
    check_out_dir(args.out)
    out = build_controlled(args.model, args.out, config, device=args.device)
    print(f"Controlled-membership set written to {out}")
