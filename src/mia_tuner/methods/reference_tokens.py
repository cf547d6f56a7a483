"""Token-level reference scores: the target's and a reference model's log-probabilities of the
same tokens, compared position by position instead of through their means (as `ref` does).

With d_i = log p_target(x_i | x_<i) − log p_ref(x_i | x_<i) for every scored token (the first
token of a text is context only), and the target's *errors* the positions where its most likely
next token is not x_i:

* ``ez`` (EZ-MIA, arXiv 2601.12104): memorisation shows most where the target is wrong yet
  still raised the true token's probability. The error zone's imbalance, the sum of its
  positive d_i over the sum of its negative |d_i|, is reported as its logarithm (the same
  order, symmetric around 0): ``log(max(P, 1e-3) / max(N, 1e-3))``, 0 when both are 0. A
  text with fewer than 2 errors (a memorised one may have none) uses all its tokens instead.
* ``ref-min-k%``: the mean of the lowest k share of the d_i (Min-K% on the log-ratio).
* ``ref-min-k%++``: Min-K%++ of the target minus Min-K%++ of the reference.

They need a reference with the target's tokenizer (the same ids for the same text): with
another, they refuse clearly (and `all` leaves them out); `ref` works with any reference. The
statistics come from the forward passes `ref` already runs: no extra pass.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import MethodError
from .base import Method, ReferenceMethod, ScoringContext, register
from .reference_free import lowest_k_mean, min_k_plus_plus_values
from .token_stats import TokenStats

EZ_FLOOR = 1e-3  # nats: the smallest side of the error zone's balance
MIN_ERRORS = 2  # fewer errors than this: the balance is taken over every token


def scored_positions(target: TokenStats, reference: TokenStats, label: str) -> int:
    """How many leading positions the two models scored on the same tokens; MethodError when
    the reference tokenises the text otherwise."""
    n = min(len(target.token_ids), len(reference.token_ids))
    if n < 2 or not np.array_equal(target.token_ids[:n], reference.token_ids[:n]):
        raise MethodError(f"`{label}` compares the target and the reference token by token, but the reference "
                          "model's tokenizer splits the text differently: use a reference with the target's "
                          "tokenizer (`ref` works with any reference)")
    return n - 1


def ez_score(log_ratios: np.ndarray, errors: np.ndarray) -> float:
    """The logarithm of the error zone's balance (module docstring)."""
    zone = log_ratios[errors] if int(errors.sum()) >= MIN_ERRORS else log_ratios
    up, down = float(zone[zone > 0].sum()), float(-zone[zone < 0].sum())
    if up == 0 and down == 0:
        return 0.0
    return math.log(max(up, EZ_FLOOR) / max(down, EZ_FLOOR))


class TokenReferenceMethod(ReferenceMethod):
    """A statistic of the target's and the reference's token statistics of the same tokens."""

    fusable = True
    needs_same_tokenizer = True
    reads_reference_tokens = True
    higher_is_member = True  # members: the target raised their tokens above the reference

    def cache_settings(self, ctx: ScoringContext) -> dict:
        return {"max_tokens": ctx.target.max_tokens, **self.reference_settings(ctx), "reference_reads": "scored-text"}

    def raw_statistic(self, texts, ctx):
        seen = ctx.target.seen_texts(texts)
        pairs = zip(ctx.target.get(texts), self.reference(ctx).get(seen))
        return np.array([self.statistic(t, r, scored_positions(t, r, self.label)) for t, r in pairs])

    def statistic(self, target: TokenStats, reference: TokenStats, n: int) -> float:
        """The statistic of one text from its first ``n`` scored positions."""
        raise NotImplementedError


@register
class ErrorZone(TokenReferenceMethod):
    """EZ-MIA's error-zone score (module docstring)."""

    name = "ez"

    def statistic(self, target, reference, n):
        return ez_score(target.logprobs[:n] - reference.logprobs[:n], target.errors[:n])


class _LowestKOfPair(TokenReferenceMethod):
    def __init__(self, settings, adapted: bool = False):
        super().__init__(settings, adapted)
        self.k = settings.k
        if not 0 < self.k <= 1:
            raise MethodError(f"{self.name}: k must be in (0, 1], got {self.k}")

    def cache_settings(self, ctx):
        return {**super().cache_settings(ctx), "k": self.k}


@register
class RefMinK(_LowestKOfPair):
    """Mean of the lowest k share of the per-token log-ratios."""

    name = "ref-min-k%"

    def statistic(self, target, reference, n):
        return lowest_k_mean(target.logprobs[:n] - reference.logprobs[:n], self.k)


@register
class RefMinKPlusPlus(_LowestKOfPair):
    """Min-K%++ of the target minus Min-K%++ of the reference, on the same tokens."""

    name = "ref-min-k%++"

    def statistic(self, target, reference, n):
        return (lowest_k_mean(min_k_plus_plus_values(target)[:n], self.k)
                - lowest_k_mean(min_k_plus_plus_values(reference)[:n], self.k))


class ErrorShare(Method):
    """The share of a text's tokens the target gets wrong: a feature of `fused+ref` (no row of
    its own). Lower for members, which the target has learnt to continue."""

    name = "error-share"
    higher_is_member = False

    def cache_settings(self, ctx: ScoringContext) -> dict:
        return {"max_tokens": ctx.target.max_tokens}

    def raw_statistic(self, texts, ctx):
        return np.array([float(stats.errors.mean()) for stats in ctx.target.get(texts)])
