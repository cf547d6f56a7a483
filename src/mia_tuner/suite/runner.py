"""Run a suite: its matrix expanded into cells (model x dataset x seed x training texts per
class, each a composed ``cell.Cell``), every column of each computed once and kept (``cell``).
A cell whose columns are all recorded loads no model, so a finished suite re-runs in seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path


from ..config import DataConfig, ModelConfig, RunConfig, SplitConfig, default_cache_dir
from ..sets import split_recipe
from .cell import Cell, CellRun, NotComputed
from .config import DatasetEntry, SuiteConfig

log = logging.getLogger(__name__)


def cells(suite: SuiteConfig, cache_dir=None) -> list[Cell]:
    """The matrix in the order it runs (a model's cells together: it loads once per cell),
    each cell composed from the suite's settings, its dataset entry and the set's recipe."""
    cache_dir = cache_dir or default_cache_dir()
    methods = suite.method_config()
    out = []
    for model in suite.models:
        loading = ModelConfig(name=model, device=suite.device, dtype=suite.dtype, device_map=suite.device_map,
                              quantization=suite.quantization)
        for dataset in suite.datasets:
            name = dataset.for_model(model)
            for seed in suite.seeds:
                for n in suite.train_per_class:
                    run = RunConfig.compose(loading, data=DataConfig(path=name, split=dataset.split),
                                            split=split_config(suite, dataset, name, seed, n), methods=methods,
                                            reference=suite.reference_for(model), cache_dir=cache_dir)
                    out.append(Cell(run, dataset, tuner=[v for v in suite.tuner if v.runs_on(dataset)],
                                    safeguards=[g for g in suite.safeguards if g.runs_on(dataset)]))
    return out


def split_config(suite: SuiteConfig, dataset: DatasetEntry, name: str, seed: int, n: int) -> SplitConfig:
    """A cell's split: its dataset entry's settings, what the entry leaves unset from the
    named set's recipe, the rest from the suite."""
    entry = split_recipe(name).fill(dataset)
    config = SplitConfig(seed=seed, max_train_per_class=n,
                         max_test_per_class=entry.test_per_class or suite.test_per_class,
                         group_by=entry.group_by, fill_test_first=not entry.paper_split)
    return config if entry.train_fraction is None else replace(config, train_fraction=entry.train_fraction)


def pending_name(cell: Cell) -> str:
    return f"{cell.model} · {cell.set_name} · seed {cell.seed} · {cell.train_per_class} per class"


def run_cell(run: CellRun) -> list[dict]:
    """Every record of one cell, computing only what is missing. Under several processes
    every one scores its share of the texts and trains on its share of each batch; the
    first writes the records."""
    try:
        records = [run.describe()] if run.writer else []
    except NotComputed:  # nothing of this cell is recorded
        return []
    if run.cell.scored:
        records += run.score_methods()
    dataset = run.cell.dataset
    trained = [partial(run.tuner, v) for v in run.cell.tuner]
    trained += [partial(run.safeguard, g) for g in run.cell.safeguards]
    for column in trained:
        try:
            records.append(column())
        except NotComputed:  # noted as pending
            pass
    # records written before they carried the suite's name of their dataset get it here (in
    # memory: the file and its hash stay as written), so one table holds every model's set
    axis = dataset.set
    return [r if "dataset_axis" in r else {**r, "dataset_axis": axis} for r in records]


@dataclass
class SuiteRun:
    records: list[dict]
    skipped: list[str]  # optional datasets that could not be had, with why
    pending: list[str] = field(default_factory=list)  # columns not computed (compute=False)


def run_suite(suite: SuiteConfig, out_dir, *, cache_dir=None, data_root=None, shard=None,
              compute: bool = True) -> SuiteRun:
    """Run (or continue) ``suite`` into ``out_dir``: the records of every cell. With
    ``compute`` False nothing is computed or loaded: the records already there, and what is
    pending (a report of a suite still under way)."""
    from tqdm.auto import tqdm

    from ..errors import DataError

    out_dir = Path(out_dir)
    records, skipped, pending = [], [], []
    for cell in tqdm(cells(suite, cache_dir), desc=f"suite {suite.name}", unit="cell", disable=not compute):
        try:
            run = CellRun(cell, out_dir, data_root, shard, compute)
        except DataError as exc:  # the set cannot be had (no local copy, no hub), or is not built
            if not compute and not cell.dataset.optional:
                pending.append(f"{pending_name(cell)}: every column ({exc})")
                continue
            if not cell.dataset.optional:
                raise
            note = f"{cell.set_name}: {exc}"
            if note not in skipped:
                log.warning("skipped optional dataset %s", note)
                skipped.append(note)
            continue
        records += run_cell(run)
        if run.pending:
            pending.append(f"{pending_name(cell)}: {', '.join(run.pending)}")
    return SuiteRun(records, skipped, pending)
