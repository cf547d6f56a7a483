"""Reference-free scores: functions of one forward pass of the target model over the text."""

from __future__ import annotations

import math
import zlib

import numpy as np

from ..errors import MethodError
from .base import Method, ScoringContext, register
from .token_stats import TokenStats

STD_FLOOR = 1e-6  # a near-deterministic next-token distribution has std ~0


def lowest_k_mean(values: np.ndarray, k: float) -> float:
    """Mean of the lowest ``k`` share of ``values`` (at least one value)."""
    count = max(1, int(math.floor(len(values) * k)))
    return float(np.sort(values)[:count].mean())


def zlib_length(text: str) -> int:
    """Bytes of the zlib-compressed UTF-8 text (the Zlib attack's entropy proxy)."""
    return len(zlib.compress(text.encode("utf-8")))


def min_k_plus_plus_values(stats: TokenStats) -> np.ndarray:
    """Per-token (log p(x_t) - mu_t) / sigma_t."""
    return (stats.logprobs - stats.mean) / np.maximum(stats.std, STD_FLOOR)


class StatsMethod(Method):
    """A method computed from the target model's token statistics of the text alone."""

    fusable = True

    def cache_settings(self, ctx: ScoringContext) -> dict:
        return {"max_tokens": ctx.target.max_tokens}

    def raw_statistic(self, texts, ctx):
        seen = ctx.target.seen_texts(texts)
        return np.array([self.statistic(s, t) for s, t in zip(ctx.target.get(texts), seen)])

    def statistic(self, stats: TokenStats, text: str) -> float:
        """The statistic of one text; ``text`` is cut as the model scored it (seen_texts)."""
        raise NotImplementedError


@register
class Loss(StatsMethod):
    """Mean token negative log-likelihood (Yeom et al.): lower for members."""

    name = "loss"
    higher_is_member = False

    def statistic(self, stats, text):
        return -stats.mean_logprob


@register
class Zlib(StatsMethod):
    """Negative log-likelihood divided by the zlib-compressed length (Carlini et al.)."""

    name = "zlib"
    higher_is_member = False

    def cache_settings(self, ctx):
        # "scored-text": the compressed size is of the truncated text (older caches used the
        # whole text, wrong for truncated texts)
        return {**super().cache_settings(ctx), "length_of": "scored-text"}

    def statistic(self, stats, text):
        return -stats.mean_logprob / zlib_length(text)


class _LowestK(StatsMethod):
    higher_is_member = True
    sweeps_k = True

    def __init__(self, settings, k: float | None = None):
        super().__init__(settings)
        self.k = settings.k if k is None else k
        if not 0 < self.k <= 1:
            raise MethodError(f"{self.name}: k must be in (0, 1], got {self.k}")

    @property
    def label(self) -> str:
        return self.name if self.k == self.settings.k else f"{self.name} (k={self.k:g})"

    def cache_settings(self, ctx):
        return {**super().cache_settings(ctx), "k": self.k}


@register
class MinK(_LowestK):
    """Mean of the lowest k% token log-probabilities (Shi et al., Min-K% Prob)."""

    name = "min-k%"

    def statistic(self, stats, text):
        return lowest_k_mean(stats.logprobs, self.k)


@register
class MinKPlusPlus(_LowestK):
    """Mean of the lowest k% standardised token log-probabilities (Zhang et al., Min-K%++)."""

    name = "min-k%++"

    def statistic(self, stats, text):
        return lowest_k_mean(min_k_plus_plus_values(stats), self.k)
