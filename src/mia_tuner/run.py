"""A whole scoring run, Fast-MIA style: config -> data -> split -> model -> methods ->
metrics -> run directory. This is what `mia-tuner scores` and the Python API call."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .cache import NoCache, ScoreCache
from .config import ModelConfig, RunConfig
from .data import hygiene_report, load_membership_set, make_split
from .data.split import EvaluationSplit, check_split_config
from .data.validation import drop_unscorable
from .data.types import MembershipSet
from .errors import MethodError
from .methods import ScoringContext, StatsProvider, build_methods
from .methods.neighbor import NEIGHBOR_TOPK
from .metrics import compute_metrics
from .models import load_model
from .reports import metrics_table, table_text, with_note, write_run
from .scoring import process_shard, score_methods

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


def open_cache(config: RunConfig):
    return ScoreCache(Path(config.cache_dir) / "scores.sqlite") if config.use_cache else NoCache()


def reference_factory(config: RunConfig):
    """Loads the reference model only when a method asks for it."""
    name = config.methods.reference
    if not name:
        return None
    ref_model = replace(config.model, name=name, gguf_file=None)
    return lambda: StatsProvider(load_model(ref_model, cache_dir=config.cache_dir),
                                 batch_size=config.methods.batch_size,
                                 max_tokens=config.methods.max_tokens, desc="reference")


def select_methods(config: RunConfig):
    """Build the methods; `all` leaves out those that need a reference model when none is given."""
    names = config.methods.methods
    methods = build_methods(names, config.methods)
    if not config.methods.reference:
        named = [m.name for m in methods if m.needs_reference and m.name in names]
        if named:
            raise MethodError(f"`{named[0]}` needs a reference model: pass --reference MODEL")
        skipped = [m.label for m in methods if m.needs_reference]
        if skipped:
            log.warning("skipping %s: no reference model given (--reference MODEL)", ", ".join(skipped))
        methods = [m for m in methods if not m.needs_reference]
    return methods


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
    ctx = ScoringContext(target=target, settings=config.methods,
                         reference_factory=reference_factory(config),
                         train_texts=split.train.texts, train_labels=split.train.labels,
                         seed=config.split.seed)
    cache = open_cache(config)
    try:
        scores, info = score_methods(methods, list(split.test.texts), ctx, cache=cache,
                                     model_key=loaded.fingerprint, shard=shard)
    finally:
        cache.close()
    return scores, info, target


def _on_cpu(model: ModelConfig) -> bool:
    import torch

    return model.device == "cpu" or not torch.cuda.is_available()


def run_scores(config: RunConfig, *, data: MembershipSet | None = None, loaded=None,
               learned: Callable[[EvaluationSplit], dict[str, np.ndarray]] | None = None) -> RunResult:
    """Score the test part of the evaluation split with every method and write the run dir.

    ``learned(split)`` adds rows of detectors trained elsewhere on the same split (the demo's
    MIA-Tuner): scores of ``split.test.texts``, computed after every method here has run on the
    untouched model."""
    dataset = data if data is not None else load_membership_set(config.data)
    methods = checked_methods(config)
    # several processes: each scores its batches; made before the model is loaded, so that
    # "cuda" means this process's GPU (accelerate sets it)
    shard = process_shard(cpu=_on_cpu(config.model) if loaded is None else loaded.device.type == "cpu")
    loaded = loaded or load_model(config.model, cache_dir=config.cache_dir)
    # before any forward pass: texts the model cannot score are refused (or skipped), long ones announced
    dataset = drop_unscorable(dataset, loaded.tokenizer, max_tokens=config.methods.max_tokens or loaded.max_tokens)
    split = make_split(dataset, config.split, dedupe=config.data.dedupe)
    hygiene = hygiene_report(dataset, loaded.tokenizer)
    scores, info, target = score_split(config, loaded, split, methods, shard)
    if learned is not None:
        scores = {**learned(split), **scores}
    labels = np.array(split.test.labels)
    metrics = {name: compute_metrics(labels, s) for name, s in scores.items()}
    extra = {"model": {"name": loaded.name, "fingerprint": loaded.fingerprint,
                       "device": str(loaded.device)},
             "data": {"name": dataset.name, **dataset.info}, "hygiene": hygiene,
             "split": split.report, "methods": info,
             "max_tokens": target.max_tokens,
             "truncated_texts": target.count_too_long(list(split.test.texts))}
    out_dir = Path(config.out)
    if shard is None or shard.rank == 0:  # one process writes the run directory
        out_dir = write_run(config.out, config=config.to_dict(), texts=list(split.test.texts),
                            labels=labels, scores=scores, metrics=metrics, extra=extra)
    table = with_note(table_text(metrics_table(metrics)), labels)
    return RunResult(out_dir=Path(out_dir), scores=scores, metrics=metrics, table=table,
                     test=split.test, train=split.train, hygiene=hygiene,
                     split_report=split.report, data=dataset)
