"""The scoring engine: runs methods over texts, reading and filling the score cache.

Methods that read the target model's statistics share one ``StatsProvider``, so each text is
run through the model once, whatever the number of such methods; the cache makes a re-run or
an added method compute only the missing rows.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .data.types import text_hash
from .methods import Method, ScoringContext

log = logging.getLogger(__name__)


def score_methods(methods: list[Method], texts: list[str], ctx: ScoringContext, *,
                  cache, model_key: str) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Scores of every method on ``texts`` (higher = member) and per-method run info."""
    scores: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    hashes = [text_hash(t) for t in texts]
    for method in methods:
        started = time.perf_counter()
        settings = method.cache_settings(ctx)
        owner = model_key if method.uses_model else "model-free"
        known = cache.get(owner, method.name, settings, texts)
        missing = list(dict.fromkeys(t for t, h in zip(texts, hashes) if h not in known))
        if missing:
            fresh = method.score(missing, ctx)
            cache.put(owner, method.name, settings, missing, fresh)
            known.update(zip((text_hash(t) for t in missing), fresh))
        scores[method.label] = np.array([known[h] for h in hashes])
        info[method.label] = {"settings": settings, "computed": len(missing),
                              "cached": len(set(hashes)) - len(missing),
                              "seconds": round(time.perf_counter() - started, 3)}
        log.info("%s: %d computed, %d from cache", method.label, len(missing),
                 info[method.label]["cached"])
    return scores, info
