"""The scoring engine: runs methods over texts, reading and filling the score cache.

Methods that read the target model's statistics share one ``StatsProvider``, so each text is
run through the model once, whatever the number of such methods. Texts missing from the cache
are worked through one batch at a time (longest first, as the model batches them), and every
method's scores of a batch are written to the cache before the next batch starts: a run that
is interrupted loses at most one batch, and its re-run computes only what is missing.

Under several processes (``accelerate launch`` / ``torchrun``) the batches are dealt out in
turn, each process scores its own, and the scores are gathered so that every process returns
all of them in the order of the texts (the same numbers as one process: the batches are the
same).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from .data.types import text_hash
from .errors import Interrupted
from .methods import Method, ScoringContext

log = logging.getLogger(__name__)


@dataclass
class _Plan:
    """One method's cache slot and what of it is already known."""

    method: Method
    owner: str
    settings: dict
    known: dict[str, float]
    computed: int = 0
    seconds: float = 0.0
    fresh: dict[str, float] = field(default_factory=dict)  # what this process computed


@dataclass
class Shard:
    """This process's place among several: it scores batches ``rank::world``."""

    rank: int
    world: int
    barrier: Callable[[], None]
    gather: Callable[[object], list]  # one object per process, in rank order


def process_shard(cpu: bool = False) -> Shard | None:
    """The Shard of this process when it is one of several (accelerate's state), else None.
    ``cpu``: the model runs on CPU (accelerate then joins CPU processes through gloo)."""
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    if state.num_processes == 1:
        return None
    from accelerate.utils import gather_object

    return Shard(state.process_index, state.num_processes, state.wait_for_everyone,
                 lambda value: gather_object([value]))


def _plans(methods: list[Method], texts: list[str], ctx: ScoringContext, cache, model_key: str):
    plans = []
    for method in methods:
        settings = method.cache_settings(ctx)
        owner = model_key if method.uses_model else "model-free"
        known = cache.get(owner, method.name, settings, texts)
        plans.append(_Plan(method, owner, settings, known))
    return plans


def _work_batches(texts: list[str], plans: list[_Plan], batch_size: int) -> list[list[str]]:
    """Distinct texts some method still needs, longest first, in batches."""
    missing = [t for t in dict.fromkeys(texts)
               if any(text_hash(t) not in p.known for p in plans)]
    missing.sort(key=len, reverse=True)
    return [missing[i:i + batch_size] for i in range(0, len(missing), batch_size)]


def _score_batch(plans: list[_Plan], batch: list[str], ctx: ScoringContext, cache) -> None:
    for plan in plans:
        todo = [t for t in batch if text_hash(t) not in plan.known]
        if not todo:
            continue
        started = time.perf_counter()
        fresh = plan.method.score(todo, ctx)
        cache.put(plan.owner, plan.method.name, plan.settings, todo, fresh)
        plan.known.update(zip(map(text_hash, todo), fresh))
        plan.fresh.update(zip(map(text_hash, todo), fresh))
        plan.computed += len(todo)
        plan.seconds += time.perf_counter() - started


def cached_scorer(cache, model_key: str, ctx: ScoringContext):
    """``(method, texts) -> scores`` through the cache, batch by batch (for a method that reads
    other methods' scores, such as `fused` on the training texts)."""
    def score(method: Method, texts: list[str]) -> np.ndarray:
        plan = _plans([method], texts, ctx, cache, model_key)[0]
        for batch in _work_batches(texts, [plan], ctx.settings.batch_size):
            _score_batch([plan], batch, ctx, cache)
        return np.array([plan.known[text_hash(t)] for t in texts])
    return score


def _gather(plans: list[_Plan], shard: Shard) -> None:
    """Every process's fresh scores into every process's plans."""
    for per_process in shard.gather([p.fresh for p in plans]):
        for plan, fresh in zip(plans, per_process):
            plan.known.update(fresh)
    for plan in plans:
        plan.computed = sum(shard.gather(len(plan.fresh)))


def interrupted_message(done: int, total: int, cache_path) -> str:
    """What a Ctrl-C kept: the finished texts in the score cache, or nothing (no cache)."""
    if cache_path:
        return (f"interrupted: {done} of {total} texts to score were finished and kept in the score "
                f"cache {cache_path}; re-run the same command to continue")
    return (f"interrupted: {done} of {total} texts were scored but nothing was kept (--no-cache): the "
            "same command starts again from the beginning (without --no-cache a re-run continues "
            "where it stopped)")


def score_methods(methods: list[Method], texts: list[str], ctx: ScoringContext, *,
                  cache, model_key: str, shard: Shard | None = None) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Scores of every method on ``texts`` (higher = member) and per-method run info.

    With a ``shard`` this process scores every ``world``-th batch and the scores of all are
    gathered (module docstring). Ctrl-C raises ``Interrupted`` saying how many texts were
    finished and kept in the cache.
    """
    ctx.score_cached = cached_scorer(cache, model_key, ctx)
    hashes = [text_hash(t) for t in texts]
    if shard is not None:
        shard.barrier()  # every process reads the cache in the same state: the same batches
    plans = _plans(methods, texts, ctx, cache, model_key)
    batches = all_batches = _work_batches(texts, plans, ctx.settings.batch_size)
    # under several processes, methods that combine other methods' scores (`fused`) run after
    # the gather, on one process, over every batch: their features then come in the batches
    # one process would have used (shared-cache timing cannot change a float)
    deferred = [p for p in plans if shard is not None and p.method.reads_scores]
    if shard is not None:
        batches = batches[shard.rank::shard.world]
    done = 0
    try:
        sharded = [p for p in plans if p not in deferred]
        for batch in tqdm(batches, desc="scoring", unit="batch", disable=len(batches) < 2):
            _score_batch(sharded, batch, ctx, cache)
            done += len(batch)
        if shard is not None:
            _gather(sharded, shard)
            for batch in all_batches if deferred and shard.rank == 0 else []:
                _score_batch(deferred, batch, ctx, cache)
            _gather(deferred, shard)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(done, sum(len(b) for b in batches), cache.path)) from None
    scores = {p.method.label: np.array([p.known[h] for h in hashes]) for p in plans}
    info = {p.method.label: {"settings": p.settings, "computed": p.computed,
                             "cached": len(set(hashes)) - p.computed,
                             "seconds": round(p.seconds, 3),
                             "processes": 1 if shard is None else shard.world} for p in plans}
    for label, row in info.items():
        log.info("%s: %d computed, %d from cache", label, row["computed"], row["cached"])
    return scores, info
