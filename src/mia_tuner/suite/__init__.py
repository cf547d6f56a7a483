"""Whole studies in one resumable command: ``mia-tuner benchmark SUITE``.

A suite (``config``) is a matrix of models x datasets x methods / MIA-Tuner variants /
safeguards x seeds x training texts per class; the runner (``runner``) computes each cell's
missing columns and keeps them (``store``); the report (``report``, ``tables``, ``figures``)
is rebuilt from every record each time.
"""

from __future__ import annotations

import time
from pathlib import Path

from .config import SHIPPED, SuiteConfig, load_suite, suite_from_dict, suite_text
from .runner import SuiteRun, cells, run_suite
from .single import defend, run_scores

__all__ = ["SHIPPED", "SuiteConfig", "SuiteRun", "benchmark", "cells", "defend", "load_suite", "run_scores",
           "run_suite", "suite_from_dict", "suite_text"]


def benchmark(suite: str | SuiteConfig, out_dir=None, *, overrides: dict | None = None, cache_dir=None,
              data_root=None, shard=None, compute: bool = True) -> tuple[SuiteRun, dict]:
    """Run (or continue) a suite — a file, a shipped name or a SuiteConfig — and write its
    report into ``out_dir`` (default ``runs/suites/<name>``): (the run, the report's paths).
    ``compute`` False: only the report of what is recorded, with what is still pending."""
    from .report import write_report

    started = time.time()
    source = suite if isinstance(suite, str) else "api"
    config = suite if isinstance(suite, SuiteConfig) else load_suite(suite, overrides)
    out_dir = Path(out_dir or Path("runs") / "suites" / config.name)
    run = run_suite(config, out_dir, cache_dir=cache_dir, data_root=data_root, shard=shard, compute=compute)
    if shard is not None and shard.rank != 0:
        return run, {}
    return run, write_report(config, run.records, out_dir, source=source, started=started, skipped=run.skipped,
                             pending=run.pending)
