"""Run a suite: every cell of its matrix, each column computed once and kept.

Per cell (model x dataset x seed x training texts per class): the set is resolved (named
sets through ``mia_tuner.sets``: a controlled set brings its injected target model and the
model before injection as reference), split, and every column not yet recorded is computed:
score-based methods through the score cache (a kill loses at most one batch), MIA-Tuner
variants through the trainer's checkpoint (at most one step), safeguards through theirs. A
cell whose columns are all recorded loads no model, so a finished suite re-runs in seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from ..config import DataConfig, ModelConfig, RunConfig, SplitConfig, default_cache_dir, method_settings
from ..sets import split_recipe
from ..data.split import EvaluationSplit
from ..reports import safe_filename
from .config import DatasetEntry, SuiteConfig
from .store import CellStore, settings_key, texts_digest

log = logging.getLogger(__name__)
# the cell record's fields: bumped when readers need a new one (``describe`` upgrades an
# older record where the new field needs no model)
CELL_RECORD_VERSION = 2


@dataclass(frozen=True)
class Cell:
    model: str
    dataset: DatasetEntry
    seed: int
    train_per_class: int

    @property
    def set_name(self) -> str:
        return self.dataset.for_model(self.model)


def cells(suite: SuiteConfig) -> list[Cell]:
    """The matrix in the order it runs (a model's cells together: it loads once per cell)."""
    return [Cell(model, dataset, seed, n) for model in suite.models for dataset in suite.datasets
            for seed in suite.seeds for n in suite.train_per_class]


@dataclass
class ResolvedData:
    data: object  # MembershipSet
    label: str  # the dataset as tables name it
    target: str  # the model to load (a controlled set's injected model)
    reference: str | None
    names: dict | None = None  # a named set's dataset and split, as records name them (sets.NamedSet)
    before_injection: str | None = None  # a controlled set's model before injection (the perfect defence)
    artefact_id: str | None = None  # what detectors trained on a named set are filed under (NamedSet)


def resolve_data(cell: Cell, suite: SuiteConfig, cache_dir, data_root, build: bool = True) -> ResolvedData:
    from .. import sets
    from ..data import load_membership_set

    name = cell.set_name
    if sets.is_named(name):
        named = sets.resolve(name, root=data_root, cache_dir=cache_dir, device=suite.device, build=build)
        # a controlled set's own reference (the model before injection) comes first
        return ResolvedData(named.data, name, named.model or cell.model,
                            named.reference or suite.reference_for(cell.model),
                            {"dataset": named.dataset, "split": named.split},
                            named.reference if named.model else None, named.artefact_id)
    data = load_membership_set(DataConfig(path=name, split=cell.dataset.split))
    label = name if not cell.dataset.split else f"{name}:{cell.dataset.split}"
    return ResolvedData(data, label, cell.model, suite.reference_for(cell.model))


def cell_split_config(suite: SuiteConfig, cell: Cell) -> SplitConfig:
    """The cell's split: its dataset entry's settings, what the entry leaves unset from the
    named set's recipe, the rest from the suite."""
    entry = split_recipe(cell.set_name).fill(cell.dataset)
    config = SplitConfig(seed=cell.seed, max_train_per_class=cell.train_per_class,
                         max_test_per_class=entry.test_per_class or suite.test_per_class,
                         group_by=entry.group_by, fill_test_first=not entry.paper_split)
    return config if entry.train_fraction is None else replace(config, train_fraction=entry.train_fraction)


class NotComputed(Exception):
    """A column missing in a run that only reads what is recorded (``compute=False``)."""


class CellRun:
    """One cell: its split, its store, and the model loaded only when a column is missing.
    With ``compute`` False nothing is computed: a missing column is noted in ``pending``."""

    def __init__(self, suite: SuiteConfig, cell: Cell, out_dir: Path, cache_dir, data_root, shard=None,
                 compute: bool = True):
        from ..data import make_split

        self.suite, self.cell, self.cache_dir, self.shard = suite, cell, str(cache_dir), shard
        self.compute, self.pending = compute, []  # columns not computed (compute=False)
        self.writer = shard is None or shard.rank == 0  # one process writes records
        self.resolved = resolve_data(cell, suite, cache_dir, data_root, build=compute)
        self.split_config = cell_split_config(suite, cell)
        self.split: EvaluationSplit = make_split(self.resolved.data, self.split_config)
        self.data_digest = texts_digest(self.resolved.data.texts, self.resolved.data.labels)
        key = {"model": cell.model, "target": self.resolved.target, "dataset": self.resolved.label,
               "data": self.data_digest, "split": vars(self.split_config)}
        self.loading = {k: v for k, v in (("dtype", suite.dtype), ("quantization", suite.quantization))
                        if v not in ("float32", None)}
        if self.loading:  # scores depend on the precision (float32, unquantised: the key as before)
            key["loading"] = self.loading
        self.key = settings_key(key)
        name = f"{safe_filename(cell.model)}__{safe_filename(self.resolved.label)}__s{cell.seed}-n{cell.train_per_class}"
        self.store = CellStore(out_dir / "cells" / f"{name}-{self.key[:8]}")
        self.labels = np.array(self.split.test.labels)
        self._loaded = None

    # ---- the model, loaded on first need -------------------------------------------------
    def model_config(self) -> ModelConfig:
        return ModelConfig(name=self.resolved.target, device=self.suite.device, dtype=self.suite.dtype,
                           device_map=self.suite.device_map, quantization=self.suite.quantization)

    def load(self, fresh: bool = False):
        """The target model (``fresh``: a new copy, for a trainer that modifies its modules)."""
        from ..models import load_model

        if self._loaded is None or fresh:
            self._loaded = load_model(self.model_config(), cache_dir=self.cache_dir)
        return self._loaded

    def forget_model(self) -> None:
        """After a trainer changed the loaded model's modules: the next ``load`` reads it afresh."""
        self._loaded = None

    def save(self, column: str, key: str, record: dict) -> dict:
        return self.store.save(column, key, record) if self.writer else record

    def check_computing(self, *columns: str) -> None:
        """Raise NotComputed (the columns noted as pending) when this run only reads records."""
        if not self.compute:
            self.pending += columns
            raise NotComputed(columns)

    def base(self) -> dict:
        """What every record of the cell shares (the tables' row and column coordinates)."""
        return {"model": self.cell.model, "dataset": self.resolved.label, "dataset_axis": self.cell.dataset.set,
                "seed": self.cell.seed, "train_per_class": self.cell.train_per_class, "cell_key": self.key}

    # ---- cell facts: mode, hygiene -------------------------------------------------------
    def describe(self) -> dict:
        """The cell's record: labels, mode (aligned/base), hygiene, split sizes."""
        key = settings_key({"cell": self.key, "record": CELL_RECORD_VERSION})
        record = self.store.load("cell", key)
        if record is not None:
            return record
        earlier = self.store.load("cell", self.key)  # version 1 lacked `set`, which needs no model
        if earlier is not None:
            fields = {k: v for k, v in earlier.items() if k not in ("format", "column", "key", "sha256")}
            upgraded = {**fields, "set": self.resolved.names}
            return self.save("cell", key, upgraded) if self.compute else upgraded
        from ..data import hygiene_report
        from ..tuner.config import TunerConfig

        self.check_computing("every column")
        loaded = self.load()
        return self.save("cell", key, {
            **self.base(), "kind": "cell", "labels": self.labels,
            "mode": TunerConfig().resolve_mode(loaded.tokenizer),
            "fingerprint": loaded.fingerprint, "target": self.resolved.target,
            "reference": self.resolved.reference, "set": self.resolved.names,
            "hygiene": hygiene_report(self.resolved.data, loaded.tokenizer),
            "split": self.split.report, "n_test": len(self.labels)})

    # ---- score-based methods ------------------------------------------------------------
    def run_config(self, out=None) -> RunConfig:
        """The cell as a scoring run's configuration (``out``: the run directory it is written to)."""
        methods = replace(self.suite.method_config(), reference=self.resolved.reference)
        data = DataConfig(path=self.cell.set_name, split=self.cell.dataset.split)
        return RunConfig.compose(self.model_config(), data=data, split=self.split_config, methods=methods,
                                 out=out or self.store.directory / "scores", cache_dir=self.cache_dir)

    def method_key(self, method) -> str:
        """The settings a method's scores depend on (conservatively: every method setting but
        the selection and batch size; the reference only for methods that read it)."""
        skip = {"methods", "batch_size"} | (set() if method.needs_reference else {"reference"})
        reads_fine_tuned = method.fine_tuned_role is not None
        settings = {k: v for k, v in method_settings(self.run_config().methods, reads_fine_tuned).items()
                    if k not in skip}
        key = {"method": method.label, "settings": settings}
        if method.version > 1:  # its scores changed for the same settings (keys of version 1 kept)
            key["version"] = method.version
        return settings_key(key)

    def selected_methods(self) -> list:
        """The suite's methods for this cell: those that cannot run here (no reference model
        given or implied by the set, or one of another tokenizer for the token-level reference
        methods) are left out of the cell, not an error (run.usable_methods)."""
        from ..methods import build_methods
        from ..run import usable_methods

        config = self.run_config()
        return usable_methods(build_methods(config.methods.methods, config.methods), config)

    def score_methods(self) -> list[dict]:
        from ..run import score_split

        methods = self.selected_methods()
        records = {m.label: self.store.load(m.label, self.method_key(m)) for m in methods}
        missing = [m for m in methods if records[m.label] is None]
        if missing and not self.compute:
            self.pending += [m.label for m in missing]
            return [r for r in records.values() if r is not None]
        if missing:
            started = time.perf_counter()
            log.info("%s: scoring %s", self.store.directory.name, ", ".join(m.label for m in missing))
            scores, info, _ = score_split(self.run_config(), self.load(), self.split, missing, self.shard)
            seconds = (time.perf_counter() - started) / len(missing)  # shared passes: an even share
            for m in missing:
                records[m.label] = self.save(m.label, self.method_key(m), {
                    **self.base(), "kind": "method", "method": m.label, "scores": scores[m.label],
                    "info": info.get(m.label, {}), "seconds": seconds})
        return list(records.values())

    # ---- MIA-Tuner variants ---------------------------------------------------------------
    def tuner(self, variant) -> dict:
        from .detectors import tuner_column

        config = variant.config(self.cell.train_per_class, self.cell.seed)
        key = settings_key({"variant": variant.column, "config": config.to_dict()})
        record = self.store.load(variant.column, key)
        if record is not None:
            return record
        self.check_computing(variant.column)
        return self.save(variant.column, key, {**self.base(), **tuner_column(self, variant)})

    # ---- what a run directory says of the target model ------------------------------------
    def target_facts(self) -> dict:
        """The target's name, device and context, and how many test texts it truncates (the
        facts a command's run directory reports, kept so that a re-run loads no model)."""
        from ..methods import StatsProvider

        max_tokens = self.suite.method_config().max_tokens
        key = settings_key({"cell": self.key, "max_tokens": max_tokens})
        record = self.store.load("target", key)
        if record is not None:
            return record
        self.check_computing("target")
        loaded = self.load()
        target = StatsProvider(loaded, max_tokens=max_tokens)
        return self.save("target", key, {
            **self.base(), "kind": "target", "name": loaded.name, "fingerprint": loaded.fingerprint,
            "device": str(loaded.device), "max_tokens": target.max_tokens,
            "truncated_texts": target.count_too_long(list(self.split.test.texts))})

    # ---- safeguards -----------------------------------------------------------------------
    def safeguard(self, guard) -> dict:
        from ..safeguards.api import defend

        config = guard.config(self.cell.seed)
        run_config = self.run_config()
        key = settings_key({"safeguard": guard.tag, "config": config.key_dict(),
                            "methods": method_settings(run_config.methods, fine_tuned=False)})
        column = f"defence:{guard.tag}"
        record = self.store.load(column, key)
        if record is not None:
            return record
        self.check_computing(column)
        started = time.perf_counter()
        result = defend(self.load(fresh=True), self.resolved.data, config,
                        self.store.directory / f"defence-{safe_filename(guard.tag)}",
                        split_config=self.split_config,
                        methods=run_config.methods, reference=self.resolved.reference,
                        cache_dir=self.cache_dir, model_config=self.model_config(),
                        before_injection=self.before_injection())
        self.forget_model()
        return self.save(column, key, {
            **self.base(), "kind": "safeguard", "safeguard": guard.tag, "against": config.against,
            "rows": result.rows, "utility": result.utility.to_dict(),
            "n_test": result.n_member + result.n_nonmember, "n_member": result.n_member,
            "n_nonmember": result.n_nonmember, "seen_rows": result.seen_rows,
            "floor": result.floor.to_dict() if result.floor else None, "seconds": time.perf_counter() - started})

    def before_injection(self) -> ModelConfig | None:
        """A controlled set's model before injection, loaded as the target is."""
        name = self.resolved.before_injection
        return replace(self.model_config(), name=name) if name else None


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
    records += run.score_methods()
    dataset = run.cell.dataset
    trained = [partial(run.tuner, v) for v in run.suite.tuner if v.runs_on(dataset)]
    trained += [partial(run.safeguard, g) for g in run.suite.safeguards if g.runs_on(dataset)]
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
    cache_dir = cache_dir or default_cache_dir()
    records, skipped, pending = [], [], []
    for cell in tqdm(cells(suite), desc=f"suite {suite.name}", unit="cell", disable=not compute):
        try:
            run = CellRun(suite, cell, out_dir, cache_dir, data_root, shard, compute)
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
