"""The pieces of a scoring run: which methods can run (``usable_methods``), the scores of a
split's test texts through the score cache (``score_split``), the reference and fine-tuned
models they read, and the run's result (``RunResult``). The suite runner puts them together
for every cell (``suite.cell``); ``suite.single.run_scores`` is a one-cell run of them."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .cache import NoCache, ScoreCache
from .config import ModelConfig, RunConfig
from .data.split import check_split_config
from .data.types import MembershipSet
from .errors import MethodError
from .methods import ScoringContext, StatsProvider, build_methods
from .methods.base import FINE_TUNED_TARGET, GROUPS
from .methods.neighbor import NEIGHBOR_TOPK
from .metrics import wrong_way_warning
from .models import load_model
from .references import fine_tuned_factories
from .reports import grouped_table_text, with_note
from .scoring import score_methods

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    scores: dict[str, np.ndarray]
    metrics: dict
    table: str
    test: MembershipSet
    train: MembershipSet
    hygiene: dict
    split_report: dict
    data: MembershipSet | None = None  # the loaded set (its info counts skipped rows)
    groups: dict[str, str] = field(default_factory=dict)  # row -> what a user needs for it (GROUPS)
    warnings: list[str] = field(default_factory=list)  # printed under the table
    records: list[dict] = field(default_factory=list)  # the cell's records (suite.single), when it ran as one

    def record(self, column: str) -> dict:
        """The record of ``column`` (a MIA-Tuner variant's: its mode, history and detector)."""
        return next(r for r in self.records if r.get("method") == column)

    def grouped_table(self) -> str:
        """The table with its rows grouped by what a user needs for them (GROUPS), the best
        row of each group marked, and the warnings under it."""
        table = grouped_table_text(self.metrics, self.groups, GROUPS)
        return with_note(table, self.test.labels, self.warnings)

    def split_summary(self) -> str:
        r = self.split_report
        return (f"Evaluation split (seed {r['seed']}): train {r['train']['member']} + "
                f"{r['train']['nonmember']}, test {r['test']['member']} + "
                f"{r['test']['nonmember']} (members + non-members); {removed_rows(r['duplicates_removed'])}")


def removed_rows(removed: dict) -> str:
    """What deduplication took out before the split, duplicates and conflicts apart."""
    text = f"{removed['duplicate_rows']} duplicate rows removed"
    if removed["conflicting_rows"]:
        text += (f", {removed['conflicting_rows']} rows dropped as conflicting ({removed['conflicting_texts']} "
                 "text(s) labelled both member and non-member)")
    return text


@contextlib.contextmanager
def open_cache(config: RunConfig):
    """The run's score cache (none with --no-cache), closed when the block ends."""
    cache = ScoreCache(Path(config.cache_dir) / "scores.sqlite") if config.use_cache else NoCache()
    try:
        yield cache
    finally:
        cache.close()


def reference_model(config: RunConfig) -> ModelConfig | None:
    """The reference model's configuration: the target's device and precision, its own name."""
    name = config.methods.reference
    return replace(config.model, name=name, gguf_file=None) if name else None


def reference_factory(config: RunConfig, full: bool = False):
    """Loads the reference model only when a method asks for it (``full``: every pass keeps
    the full token statistics, for methods that compare them token by token)."""
    ref_model = reference_model(config)
    if ref_model is None:
        return None
    return lambda: StatsProvider(load_model(ref_model, cache_dir=config.cache_dir),
                                 batch_size=config.methods.batch_size,
                                 max_tokens=config.methods.max_tokens, desc="reference", always_full=full)


def same_tokenizer(config: RunConfig) -> bool | None:
    """Whether the reference splits texts as the target does (None without a reference)."""
    from .models.loading import tokenizers_match

    ref_model = reference_model(config)
    return None if ref_model is None else tokenizers_match(config.model, ref_model, config.cache_dir)


def usable_methods(methods: list, config: RunConfig, explicit=(), defended: bool = False) -> list:
    """``methods`` less those that cannot run here: without a reference those that need one,
    with a reference of another tokenizer those that compare tokens with it, on a
    ``defended`` model those that fine-tune the target (a copy of a model behind a defence cannot
    be trained). A method named in ``explicit`` is an error instead
    (MethodError); one that came with `all` is left out, with a warning."""
    if defended and any(m.fine_tuned_role == FINE_TUNED_TARGET for m in methods):
        unusable = [m for m in methods if m.fine_tuned_role == FINE_TUNED_TARGET]
        why = "it fine-tunes the target, which cannot be done through a defence"
        methods = _refuse_or_drop(methods, unusable, explicit, why)
    if not config.methods.reference:
        unusable, why = [m for m in methods if m.needs_reference], "no reference model given (--reference MODEL)"
    elif any(m.needs_same_tokenizer for m in methods) and not same_tokenizer(config):
        unusable = [m for m in methods if m.needs_same_tokenizer]
        why = (f"the reference {config.methods.reference} splits texts into other tokens than the target "
               f"{config.model.name}; they compare the two token by token (`ref` works with any reference)")
    else:
        return methods
    return _refuse_or_drop(methods, unusable, explicit, why)


def _refuse_or_drop(methods: list, unusable: list, explicit, why: str) -> list:
    named = [m.name for m in unusable if m.name in explicit]
    if named:
        raise MethodError(f"`{named[0]}` cannot run: {why}")
    if unusable:
        log.warning("skipping %s: %s", ", ".join(m.label for m in unusable), why)
    return [m for m in methods if m not in unusable]


def select_methods(config: RunConfig, defended: bool = False):
    """Build the methods; `all` leaves out those that cannot run (usable_methods)."""
    names = config.methods.methods
    return usable_methods(build_methods(names, config.methods), config, explicit=names, defended=defended)


def checked_methods(config: RunConfig):
    """The run's methods, once every setting that needs no model is checked (split, methods)."""
    check_split_config(config.split)
    return select_methods(config)


def score_split(config: RunConfig, loaded, split, methods, shard=None) -> tuple[dict, dict, StatsProvider]:
    """Scores of ``methods`` on the test part of ``split`` (the train part feeds learned
    detectors), through the score cache; also per-method info and the target StatsProvider.
    ``shard``: this process's part when several score together (scoring.process_shard)."""
    needs_topk = any(m.needs_topk for m in methods)
    target = StatsProvider(loaded, batch_size=config.methods.batch_size,
                           max_tokens=config.methods.max_tokens,
                           topk=NEIGHBOR_TOPK if needs_topk else 0, desc="target")
    compares_tokens = any(m.reads_reference_tokens for m in methods)
    ctx = ScoringContext(target=target, settings=config.methods,
                         reference_factory=reference_factory(config, full=compares_tokens),
                         train_texts=split.train.texts, train_labels=split.train.labels,
                         seed=config.split.seed, same_tokenizer=same_tokenizer(config) if compares_tokens else None)
    ctx.factories = fine_tuned_factories(methods, ctx, split, config.model, reference_model(config), config.cache_dir)
    with open_cache(config) as cache:
        scores, info = score_methods(methods, list(split.test.texts), ctx, cache=cache,
                                     model_key=loaded.fingerprint, shard=shard)
    fine_tuned = ctx.shared.get("fine_tuned", {})
    for method in methods:  # how the fine-tuned model a method read was chosen
        role = method.fine_tuned_role
        if role in fine_tuned and method.label in info:
            info[method.label]["fine_tuned"] = fine_tuned[role]
    return scores, info, target


def runs_on_cpu(model: ModelConfig) -> bool:
    """Whether ``model`` will run on the CPU (asked or no GPU there)."""
    import torch

    return model.device == "cpu" or not torch.cuda.is_available()


def validation_aurocs(info: dict) -> dict[str, float]:
    """The validation AUROC of each method that read a model chosen on validation texts."""
    out = {}
    for label, row in info.items():
        chosen = (row.get("fine_tuned") or {}).get("chosen") or {}
        if label in (chosen.get("validation_auroc") or {}):
            out[label] = chosen["validation_auroc"][label]
    return out


def wrong_way_warnings(aurocs: dict[str, float]) -> list[str]:
    """A warning for every learned detector that ranks its validation texts the wrong way."""
    return [w for label, value in aurocs.items() if (w := wrong_way_warning(label, value))]
