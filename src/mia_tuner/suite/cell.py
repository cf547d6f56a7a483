"""One cell of a suite: its composed configuration (``Cell``) and its run (``CellRun``).

A cell is a model x a set x a split x the columns computed on it (score-based methods,
MIA-Tuner variants, safeguards). A suite's matrix expands into cells (``runner.cells``); a
command is a one-cell suite (``single``). Per cell the set is resolved (named sets through
``mia_tuner.sets``: a controlled set brings its injected target model and the model before
injection as reference), the texts the model cannot score are refused or skipped, the split is
made, and every column not yet recorded is computed: score-based methods through the score
cache (a kill loses at most one batch), MIA-Tuner variants through the trainer's checkpoint (at
most one step), safeguards through theirs. A cell whose columns are all recorded loads no model.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config import ModelConfig, RunConfig, method_settings
from ..data.split import EvaluationSplit
from ..reports import safe_filename
from ..rundir import CELL_RECORDS
from .config import DatasetEntry
from .store import CellStore, artefact_intact, settings_key, texts_digest

log = logging.getLogger(__name__)
# the cell record's fields: bumped when readers need a new one (``describe`` upgrades an
# older record where the new field needs no model)
CELL_RECORD_VERSION = 2


@dataclass
class Cell:
    """One cell, composed: everything its columns depend on, from a suite's matrix or from a
    command's options alike."""

    run: RunConfig  # the model as named (a controlled set replaces the target), the set (DataConfig:
    #                 a set name or a path), its split, the methods and their reference, the cache
    dataset: DatasetEntry  # the suite's entry: the tables' dataset axis; `optional`
    tuner: list = field(default_factory=list)  # TunerVariant: MIA-Tuner columns
    safeguards: list = field(default_factory=list)  # SafeguardEntry: safeguard columns
    defence: str | None = None  # a saved defence the target is loaded behind (`scores --defence`)
    # a command's run (not a suite's): a method it names that cannot run is an error (in a suite:
    # left out); texts the model cannot score are refused or skipped first; its records are keyed
    # by the target's weight files too (a suite's keys leave them out: portable across machines)
    command: bool = False
    scored: bool = True  # the score-based methods are columns (`train --no-compare`: MIA-Tuner alone)
    # the folder of the cell's one trained column (`train --out`: the detector and its checkpoint;
    # `defend --out`: the defence and its report); None: a detector is filed in the cache
    # (suite.detectors), a defence in the cell's folder
    artefact_dir: str | None = None
    retrain: bool = False  # MIA-Tuner trained afresh: its record, saved detector and checkpoint ignored
    questions: list | None = None  # MMLU-layout questions a safeguard's utility is measured on too

    @property
    def model(self) -> str:
        return self.run.model.name

    @property
    def set_name(self) -> str:
        return self.run.data.path

    @property
    def seed(self) -> int:
        return self.run.split.seed

    @property
    def train_per_class(self) -> int:
        return self.run.split.max_train_per_class


@dataclass
class ResolvedData:
    data: object  # MembershipSet
    label: str  # the dataset as tables name it
    target: str  # the model to load (a controlled set's injected model)
    reference: str | None
    names: dict | None = None  # a named set's dataset and split, as records name them (sets.NamedSet)
    before_injection: str | None = None  # a controlled set's model before injection (the perfect defence)
    artefact_id: str | None = None  # what detectors trained on a named set are filed under (NamedSet)


def resolve_data(cell: Cell, data_root, build: bool = True, data=None, named=None) -> ResolvedData:
    """The cell's labelled texts, its target and its reference. ``data``: given by the caller
    (a command, the Python API), with ``named``, the NamedSet a command resolved it from (the
    cell's run then already names the set's target and the reference the user chose)."""
    from .. import sets
    from ..data import load_membership_set

    name, reference = cell.set_name, cell.run.methods.reference
    if data is None and sets.is_named(name):
        named = sets.resolve(name, root=data_root, cache_dir=cell.run.cache_dir, device=cell.run.model.device,
                             build=build)
        # a controlled set's own reference (the model before injection) comes first
        return ResolvedData(named.data, name, named.model or cell.model, named.reference or reference,
                            *_named_fields(named))
    data = data if data is not None else load_membership_set(cell.run.data)
    label = name or data.name
    label = label if not cell.run.data.split else f"{label}:{cell.run.data.split}"
    return ResolvedData(data, label, cell.model, reference, *(_named_fields(named) if named else ()))


def _named_fields(named) -> tuple:
    """ResolvedData's fields from a NamedSet: names, the model before injection, artefact id."""
    return ({"dataset": named.dataset, "split": named.split}, named.reference if named.model else None,
            named.artefact_id)


def once(method):
    """A CellRun method whose result is kept on the instance after its first call (not in a
    cache that would keep every cell's run, and its model, alive)."""
    @functools.wraps(method)
    def kept(self):
        memo = self.__dict__.setdefault("_once", {})
        if method.__name__ not in memo:
            memo[method.__name__] = method(self)
        return memo[method.__name__]
    return kept


class NotComputed(Exception):
    """A column missing in a run that only reads what is recorded (``compute=False``)."""


class CellRun:
    """One cell: its split, its store, and the model loaded only when a column is missing.
    With ``compute`` False nothing is computed: a missing column is noted in ``pending``."""

    def __init__(self, cell: Cell, out_dir: Path, data_root=None, shard=None, compute: bool = True, *,
                 data=None, loaded=None, named=None):
        """``data`` and ``loaded``: the labelled texts and the target already in memory (a
        command, the Python API's ``run_scores``), used instead of reading them; ``named``: the
        named set ``data`` came from (resolve_data)."""
        self.cell, self.cache_dir, self.shard = cell, str(cell.run.cache_dir), shard
        self.compute, self.pending = compute, []  # columns not computed (compute=False)
        self.computed: set[str] = set()  # columns computed by this run (the others read from records)
        self.writer = shard is None or shard.rank == 0  # one process writes records
        self.split_config = cell.run.split
        self._loaded, self._given = loaded, loaded  # the caller's model: never handed over itself
        self.resolved = resolve_data(cell, data_root, build=compute, data=data, named=named)
        # the key: the set as loaded (before texts too short to score are left out, which the
        # model's tokenizer decides: the model is in the key)
        self.data_digest = texts_digest(self.resolved.data.texts, self.resolved.data.labels)
        self.loading = {k: v for k, v in (("dtype", cell.run.model.dtype), ("quantization", cell.run.model.quantization))
                        if v not in ("float32", None)}
        settings = self._key_settings()
        self.key = settings_key(settings)
        # a command's model (or reference) not on this machine yet, a hub model about to be
        # downloaded: its weights cannot be keyed, so no record is read or written this time
        weights_unknown = any(k in settings and settings[k] is None for k in ("weights", "reference_weights"))
        if cell.command:  # refused or skipped before any forward pass
            self.resolved.data = self._scorable(self.resolved.data)
        self.split: EvaluationSplit = self._make_split()
        name = f"{safe_filename(cell.model)}__{safe_filename(self.resolved.label)}__s{cell.seed}-n{cell.train_per_class}"
        keep = cell.run.use_cache and not weights_unknown  # --no-cache: no record read or written either
        self.store = CellStore(Path(out_dir) / CELL_RECORDS / f"{name}-{self.key[:8]}", keep=keep)
        self.labels = np.array(self.split.test.labels)

    def _key_settings(self) -> dict:
        """What the cell's records depend on, beyond each column's own settings (the keys of
        suites' cells as they were: a field is added only where it differs from its default)."""
        from ..config import DataConfig
        from ..models.on_disk import weights_manifest

        key = {"model": self.cell.model, "target": self.resolved.target, "dataset": self.resolved.label,
               "data": self.data_digest, "split": vars(self.split_config)}
        if self.loading:  # scores depend on the precision (float32, unquantised: the key as before)
            key["loading"] = self.loading
        reading = {k: v for k, v in vars(self.cell.run.data).items()
                   if k not in ("path", "split") and v != getattr(DataConfig, k)}
        if reading:  # the set read with other columns, deduplication or skipping
            key["reading"] = reading
        if self.cell.command:  # the weights as they are now: a model changed in place is scored again
            key["weights"] = getattr(self._loaded, "fingerprint", None) or \
                weights_manifest(self.model_config(), self.cache_dir)
            reference = self.resolved.reference
            if reference:  # the reference's too (a reference changed in place: its rows again)
                key["reference_weights"] = weights_manifest(replace(self.model_config(), name=reference,
                                                                    gguf_file=None), self.cache_dir)
        if self.defended:  # the defended model's own scores: the defence's hash
            from ..safeguards.artefact import read_defence_info

            loaded_defence = getattr(self._loaded, "defence", None)
            key["defence"] = loaded_defence or read_defence_info(self.cell.defence)["sha256"]
        return key

    @property
    def defended(self) -> bool:
        """Whether the target runs behind a defence (``--defence``, or a model given so)."""
        return bool(self.cell.defence or getattr(self._loaded, "defence", None))

    def _scorable(self, data):
        """``data`` without the texts too short for the model to score (refused unless the set
        was read with skip_invalid); longer texts than are scored are announced."""
        from ..data.validation import drop_unscorable
        from ..models.loading import load_tokenizer_of
        from ..models.on_disk import context_tokens

        if self._loaded is not None:
            tokenizer, context = self._loaded.tokenizer, self._loaded.max_tokens
        else:  # the tokenizer and the context alone: a re-run of recorded columns loads no weights
            tokenizer = load_tokenizer_of(self.model_config(), self.cache_dir)
            context = context_tokens(self.model_config(), self.cache_dir)
        return drop_unscorable(data, tokenizer, max_tokens=self.cell.run.methods.max_tokens or context)

    @once
    def scorable_data(self):
        """The set without the texts the model cannot score (a command's set already is)."""
        return self.resolved.data if self.cell.command else self._scorable(self.resolved.data)

    def _make_split(self) -> EvaluationSplit:
        from ..data import make_split

        return make_split(self.resolved.data, self.split_config, dedupe=self.cell.run.data.dedupe)

    # ---- the model, loaded on first need -------------------------------------------------
    def model_config(self) -> ModelConfig:
        """The target, loaded as the cell says (a controlled set's injected model in its place)."""
        return replace(self.cell.run.model, name=self.resolved.target)

    def load(self):
        """The target model, loaded on first need (behind the cell's defence, if any)."""
        from ..models import load_model

        if self._loaded is None:
            self._loaded = load_model(self.model_config(), cache_dir=self.cache_dir)
            if self.cell.defence:  # behind the saved defence (its base model checked)
                from ..safeguards.artefact import apply_defence

                self._loaded = apply_defence(self.cell.defence, self._loaded)
        return self._loaded

    def hand_over(self):
        """The target for a trainer that changes its modules (an adapter, LoRA): the model
        loaded so far, which scoring leaves as it was; the next ``load`` reads it afresh. A
        model the caller gave is handed over as a copy (it may exist only in memory)."""
        loaded = self.load()
        if loaded is self._given:
            import copy

            return replace(loaded, model=copy.deepcopy(loaded.model))
        self._loaded = None
        return loaded

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
    @once  # read or made once per run (with --no-cache no record keeps it)
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
        methods = replace(self.cell.run.methods, reference=self.resolved.reference)
        return RunConfig.compose(self.model_config(), data=self.cell.run.data, split=self.split_config,
                                 methods=methods, out=out or self.store.directory / "scores",
                                 cache_dir=self.cache_dir, use_cache=self.cell.run.use_cache)

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

    def selected_methods(self, defended: bool | None = None) -> list:
        """The cell's methods: those that cannot run here (no reference model given or implied
        by the set, one of another tokenizer for the token-level reference methods, a method
        that fine-tunes a target behind a defence) are left out of a suite's cell, and an error
        when a command names them (run.usable_methods). ``defended``: the methods of a model
        behind a defence (default: whether the cell's target is)."""
        from ..methods import build_methods
        from ..run import usable_methods

        config = self.run_config()
        explicit = config.methods.methods if self.cell.command else ()
        defended = self.defended if defended is None else defended
        return usable_methods(build_methods(config.methods.methods, config.methods), config, explicit=explicit,
                              defended=defended)

    def score_methods(self) -> list[dict]:
        """The records of the cell's methods on its split, computing those missing."""
        methods = self.selected_methods()
        records = self.score_columns(methods, self.split, {m.label: (m.label, self.method_key(m)) for m in methods},
                                     {"kind": "method"})
        return [r for r in records.values() if r is not None]

    def score_part(self, part: str, split: EvaluationSplit, methods: list, model: str, load=None,
                   config: RunConfig | None = None) -> dict[str, np.ndarray]:
        """Each method's scores of ``split``'s test texts by another model than the cell's
        target on its own split (``model``: what names it, ``load``: what loads it, only when a
        score is missing; default the target), recorded in the cell like its own columns (the
        column ``<part>-<texts>@<model>:<method>``): a safeguard's attacks before and after it."""
        digest = texts_digest([*split.train.texts, *split.test.texts], [*split.train.labels, *split.test.labels])
        columns = {m.label: (f"{part}-{digest[:8]}@{model}:{m.label}",
                             settings_key({"method": self.method_key(m), "texts": digest, "model": model}))
                   for m in methods}
        records = self.score_columns(methods, split, columns, {"kind": "part", "part": part, "scored_by": model},
                                     load=load, config=config)
        return {label: np.asarray(r["scores"], dtype=float) for label, r in records.items()}

    def score_columns(self, methods: list, split: EvaluationSplit, columns: dict, fields: dict, load=None,
                      config: RunConfig | None = None) -> dict[str, dict | None]:
        """The record of each method (``columns``: its column and key) on ``split``, those
        missing scored in one pass by the model ``load()`` gives (the target by default) with
        ``config`` (the cell's by default) and saved with ``fields``; None for a missing one in
        a run that only reads records (noted as pending)."""
        from ..run import score_split

        records = {m.label: self.store.load(*columns[m.label]) for m in methods}
        missing = [m for m in methods if records[m.label] is None]
        if missing and not self.compute:
            self.pending += [columns[m.label][0] for m in missing]
            return records
        if missing:
            started = time.perf_counter()
            log.info("%s: scoring %s", self.store.directory.name, ", ".join(columns[m.label][0] for m in missing))
            scores, info, _ = score_split(config or self.run_config(), (load or self.load)(), split, missing,
                                          self.shard)
            seconds = (time.perf_counter() - started) / len(missing)  # shared passes: an even share
            self.computed.update(m.label for m in missing if fields["kind"] == "method")
            for m in missing:
                records[m.label] = self.save(*columns[m.label], {
                    **self.base(), **fields, "method": m.label, "scores": scores[m.label],
                    "info": info.get(m.label, {}), "seconds": seconds})
        return records

    # ---- MIA-Tuner variants ---------------------------------------------------------------
    def tuner(self, variant) -> dict:
        from .detectors import tuner_column

        config = variant.config(self.cell.train_per_class, self.cell.seed)
        key = settings_key({"variant": variant.column, "config": config.to_dict()})
        record = None if self.cell.retrain else self.store.load(variant.column, key)
        if record is not None and artefact_intact(record):
            return record
        self.check_computing(variant.column)
        return self.save(variant.column, key, {**self.base(), **tuner_column(self, variant)})

    # ---- what a run directory says of the target model ------------------------------------
    @once  # read or made once per run, before a trainer takes the model over
    def target_facts(self) -> dict:
        """The target's name, device and context, and how many test texts it truncates (the
        facts a command's run directory reports, kept so that a re-run loads no model)."""
        from ..methods import StatsProvider

        max_tokens = self.cell.run.methods.max_tokens
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
        from .defence import safeguard_column

        config = guard.config(self.cell.seed)
        settings = {"safeguard": guard.tag, "config": config.key_dict(),
                    "methods": method_settings(self.run_config().methods, fine_tuned=False)}
        if self.cell.questions:  # utility measured on these questions too (suites: on general text only)
            settings["questions"] = [dataclasses.asdict(q) for q in self.cell.questions]
        if guard.attack is not None:  # the attacker's MIA-Tuner set apart from the defence's epochs
            settings["attack"] = guard.attack_config(config).to_dict()
        if self.cell.command and self.resolved.before_injection:  # a command's (the API's) released model
            settings["released"] = self.resolved.before_injection
        key = settings_key(settings)
        column = f"defence:{guard.tag}"
        record = self.store.load(column, key)
        if record is not None and artefact_intact(record):
            return record
        self.check_computing(column)
        folder = self.cell.artefact_dir or self.store.directory / f"defence-{safe_filename(guard.tag)}"
        return self.save(column, key, {**self.base(), **safeguard_column(self, guard, config, Path(folder))})

    def before_injection(self) -> ModelConfig | None:
        """A controlled set's model before injection, loaded as the target is."""
        name = self.resolved.before_injection
        return replace(self.model_config(), name=name) if name else None
