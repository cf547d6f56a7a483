"""`mia-tuner benchmark SUITE`: run (or continue) a suite and write its report.

The overrides are generated from ``SuiteConfig``'s fields (``cli.fields``): every top-level
field a suite file sets can be set here (lists comma-separated); nested ones (MIA-Tuner
variants, safeguards, method settings) live in the suite file.
"""

from __future__ import annotations

from .fields import add_dataclass_options, values_from_args
from ..suite.config import SHIPPED, SuiteConfig
from .options import add_cache_options

PREFIX = "suite_"
NESTED = ("datasets", "tuner", "safeguards", "method_settings")


def add_parser(commands) -> None:
    bench = commands.add_parser(
        "benchmark", help="run a whole study (a suite) and write one report: HTML, Markdown, CSV")
    bench.add_argument("suite", help=f"a suite YAML file or a shipped suite: {', '.join(SHIPPED)}")
    bench.add_argument("--out", help="report and results folder (default: runs/suites/<name>)")
    bench.add_argument("--data-root", help="folder with local copies of the named sets (env MIA_TUNER_DATA)")
    bench.add_argument("--datasets", help="comma-separated set names replacing the suite's datasets")
    bench.add_argument("--report-only", action="store_true",
                       help="compute nothing: the report of what is recorded, listing what is still pending")
    add_dataclass_options(bench, SuiteConfig, prefix=PREFIX, skip=NESTED, unset=[
        f.name for f in SuiteConfig.__dataclass_fields__.values()], unset_text="the suite's")
    add_cache_options(bench)


def run(args) -> None:
    from ..scoring import process_shard
    from ..suite import benchmark

    overrides = {k: v for k, v in values_from_args(SuiteConfig, args, prefix=PREFIX).items() if v is not None}
    if args.datasets:
        overrides["datasets"] = [name.strip() for name in args.datasets.split(",") if name.strip()]
    shard = process_shard(cpu=_cpu(overrides.get("device", "auto")))
    run, paths = benchmark(args.suite, args.out, overrides=overrides, cache_dir=args.cache_dir,
                           data_root=args.data_root, shard=shard, compute=not args.report_only)
    if paths:
        print(f"{len(run.records)} records; report: {paths['html']} (also {paths['markdown'].name}, "
              f"{paths['csv'].name})")
        for note in run.skipped:
            print(f"not run: {note}")
        if run.pending:
            print(f"{len(run.pending)} cell(s) with columns not computed yet (listed in the report); run "
                  "without --report-only to compute them")


def _cpu(device: str) -> bool:
    import torch

    return device == "cpu" or not torch.cuda.is_available()
