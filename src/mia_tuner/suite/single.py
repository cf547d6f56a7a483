"""A one-cell suite run as a command: its cell computed by the suite runner, then written as a
run directory (scores.csv, metrics.json, table.md, plots) from the cell's records.

The records live in ``<out>/cells/``: a re-run into the same folder reads them and loads no
model; a run into another folder recomputes nothing either, reading the score cache and the
detectors filed in the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .config import SuiteConfig


def run_single_cell(suite: SuiteConfig, out, *, cache_dir=None, data_root=None):
    """Run ``suite`` (exactly one cell) into the run directory ``out``; a ``run.RunResult``."""
    from ..config import default_cache_dir
    from .runner import CellRun, cells, run_cell

    matrix = cells(suite)
    if len(matrix) != 1:
        raise ConfigError(f"suite {suite.name!r} has {len(matrix)} cells; a command's run holds one")
    run = CellRun(suite, matrix[0], Path(out), cache_dir or default_cache_dir(), data_root)
    return write_cell_run(run, run_cell(run), out)


def write_cell_run(run, records: list[dict], out):
    """The run directory of ``run``'s cell from its ``records``: the learned columns (MIA-Tuner
    variants) first, then the score-based methods in the order they were selected."""
    from ..methods.base import GROUPS, method_group
    from ..metrics import compute_metrics
    from ..reports import metrics_table, table_text, with_note, write_run
    from ..run import RunResult, validation_aurocs, wrong_way_warnings

    described = next(r for r in records if r["kind"] == "cell")
    methods = {m.label: m for m in run.selected_methods()}
    learned = [r for r in records if r["kind"] == "method" and r["method"] not in methods]
    scored = {r["method"]: r for r in records if r["kind"] == "method" and r["method"] in methods}
    scores = {r["method"]: np.asarray(r["scores"], dtype=float) for r in learned}
    scores.update({label: np.asarray(scored[label]["scores"], dtype=float) for label in methods})
    info = {label: scored[label]["info"] for label in methods}
    validation = validation_aurocs(info)
    validation.update({r["method"]: r["validation_auroc"] for r in learned if r.get("validation_auroc") is not None})
    groups = {r["method"]: GROUPS[1] for r in learned}  # trained on labelled texts
    groups.update({label: method_group(m) for label, m in methods.items()})
    warnings = wrong_way_warnings(validation)
    labels = np.array(run.split.test.labels)
    metrics = {name: compute_metrics(labels, s) for name, s in scores.items()}
    facts, data = run.target_facts(), run.resolved.data
    extra = {"model": {k: facts[k] for k in ("name", "fingerprint", "device")},
             "data": {"name": data.name, **data.info}, "hygiene": described["hygiene"],
             "split": described["split"], "methods": info, "max_tokens": facts["max_tokens"],
             "truncated_texts": facts["truncated_texts"], "groups": groups, "validation_auroc": validation}
    if run.writer:
        write_run(out, config=run.run_config(out).to_dict(), texts=list(run.split.test.texts), labels=labels,
                  scores=scores, metrics=metrics, extra=extra, warnings=warnings)
    table = with_note(table_text(metrics_table(metrics)), labels, warnings)
    return RunResult(out_dir=Path(out), scores=scores, metrics=metrics, table=table, test=run.split.test,
                     train=run.split.train, hygiene=described["hygiene"], split_report=described["split"],
                     data=data, groups=groups, warnings=warnings)
