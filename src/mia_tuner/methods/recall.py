"""Labelled-prefix attacks: the text's likelihood when the model first reads a prefix of known
texts from the training part of the split.

* ReCaLL (Xie et al., 2024): ``NLL(x | P_non) / NLL(x)`` with ``P_non`` a prefix of known
  non-members. Conditioning a member on non-member context lowers its likelihood more than it
  lowers a non-member's, so a larger ratio means member.
* Con-ReCall (Wang et al., 2024): ``(NLL(x | P_non) - gamma * NLL(x | P_mem)) / NLL(x)``, the
  member prefix pulling the other way.

The prefix is the shots joined by blank lines; its keys and values are computed once per run
and reused for every batch of texts (copied and repeated to the batch size), so a text costs a
forward pass of its own tokens only. The conditional NLL covers the same tokens of the text as
the unconditional one (the Loss attack's targets).
"""

from __future__ import annotations

import copy
import hashlib
import logging

import numpy as np
import torch

from ..errors import MethodError
from ..models.kv_cache import returned_cache, with_cache
from .base import Method, ScoringContext, register
from ..models.batching import pad_batch

SHOT_SEPARATOR = "\n\n"
log = logging.getLogger(__name__)


def choose_shots(ctx: ScoringContext, label: int) -> list[str]:
    """``recall_shots`` training texts of one class, drawn with the run's seed."""
    pool = [t for t, y in zip(ctx.train_texts, ctx.train_labels) if y == label]
    shots = ctx.settings.recall_shots
    if shots < 1:
        raise MethodError(f"recall_shots must be >= 1, got {shots}")
    if len(pool) < 2:
        kind = "members" if label == 1 else "non-members"
        raise MethodError(f"ReCaLL needs training {kind} for its prefix; the training part has {len(pool)}")
    if len(pool) < 2 * shots:  # keep half of a small training part for `fused`
        log.warning("ReCaLL: %d shots asked, the training part has %d texts of the class: using %d",
                    shots, len(pool), len(pool) // 2)
        shots = len(pool) // 2
    rng = np.random.default_rng([ctx.seed, label])
    return [pool[i] for i in sorted(rng.choice(len(pool), size=shots, replace=False))]


def prefix_shots(ctx: ScoringContext) -> dict[int, list[str]]:
    """The shots of both classes (members 1, non-members 0), as many as fit the context."""
    if "shots" not in ctx.shared:
        ctx.shared["shots"] = {label: fitted(ctx, choose_shots(ctx, label)) for label in (1, 0)}
    return ctx.shared["shots"]


def fitted(ctx: ScoringContext, shots: list[str]) -> list[str]:
    """The first shots whose prefix fits in half the target's token budget (the other half is
    left to the text), as ReCaLL's own code trims a prefix that is too long."""
    tokenizer, budget = ctx.target.loaded.tokenizer, ctx.target.max_tokens // 2
    kept, used = [], 1  # a BOS token
    for shot in shots:
        used += len(tokenizer(shot + SHOT_SEPARATOR, add_special_tokens=False)["input_ids"])
        if used > budget:
            break
        kept.append(shot)
    if not kept:
        raise MethodError(f"not one ReCaLL shot fits in half the model's {ctx.target.max_tokens}-token "
                          "context; raise --max-tokens or use shorter training texts")
    if len(kept) < len(shots):
        log.warning("ReCaLL: %d of %d shots fit in %d tokens; using %d", len(kept), len(shots),
                    budget, len(kept))
    return kept


class PrefixedLikelihood:
    """Mean log-likelihood of texts after a fixed prefix, with the prefix's cache reused."""

    def __init__(self, loaded, prefix_text: str, batch_size: int, max_tokens: int):
        self.loaded, self.batch_size = loaded, batch_size
        tokenizer = loaded.tokenizer
        self.prefix_ids = list(tokenizer(prefix_text, add_special_tokens=True)["input_ids"])
        self.text_budget = max_tokens - len(self.prefix_ids)
        if self.text_budget < 2:
            raise MethodError(f"the ReCaLL prefix has {len(self.prefix_ids)} tokens, leaving no room "
                              f"for a text in {max_tokens}; lower --recall-shots")
        # the Loss attack does not score a text's first token when the tokenizer adds no BOS
        probe = "a b"
        self.skip_first = len(tokenizer(probe, add_special_tokens=True)["input_ids"]) == \
            len(tokenizer(probe, add_special_tokens=False)["input_ids"])
        self._cache, self._last_logprobs = self._prefix_pass()
        self._memo: dict[str, float] = {}

    @torch.inference_mode()
    def _prefix_pass(self):
        ids = torch.tensor([self.prefix_ids], device=self.loaded.device)
        out = self.loaded.model(input_ids=ids, use_cache=True)
        return returned_cache(out), torch.log_softmax(out.logits[0, -1].float(), dim=-1)

    def text_ids(self, text: str) -> list[int]:
        ids = list(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])[: self.text_budget]
        if len(ids) < 1 + self.skip_first:
            raise MethodError(f"a text has too few tokens to score after a prefix: {text!r}")
        return ids

    def mean_logprobs(self, texts: list[str]) -> np.ndarray:
        """Per text, memoised (ReCaLL and Con-ReCall read the same non-member prefix)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        sequences = [self.text_ids(t) for t in missing]
        order = sorted(range(len(missing)), key=lambda i: len(sequences[i]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            values = self._batch([sequences[i] for i in batch])
            self._memo.update((missing[i], v) for i, v in zip(batch, values))
        return np.array([self._memo[t] for t in texts])

    @torch.inference_mode()
    def _batch(self, sequences: list[list[int]]) -> np.ndarray:
        device = self.loaded.device
        ids, mask = pad_batch(sequences, self.loaded.tokenizer.pad_token_id)
        cache = copy.deepcopy(self._cache)
        cache.batch_repeat_interleave(len(sequences))
        full_mask = torch.cat([torch.ones(len(sequences), len(self.prefix_ids), dtype=mask.dtype), mask], 1)
        logits = self.loaded.model(input_ids=ids.to(device), attention_mask=full_mask.to(device),
                                   use_cache=True, **with_cache(self.loaded.model, cache)).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        means = []
        for row, seq in enumerate(sequences):
            target = torch.tensor(seq, device=device)
            first = self._last_logprobs[target[0]].unsqueeze(0)
            rest = logprobs[row, : len(seq) - 1].gather(-1, target[1:].unsqueeze(-1)).squeeze(-1)
            token_logprobs = torch.cat([first, rest])[int(self.skip_first):]
            means.append(float(token_logprobs.double().mean()))
        return np.array(means)


def prefixed(ctx: ScoringContext, shots: list[str]) -> PrefixedLikelihood:
    """The run's PrefixedLikelihood for these shots (built once, shared by the methods)."""
    key = ("prefix", shots_hash(shots))
    if key not in ctx.shared:
        ctx.shared[key] = PrefixedLikelihood(ctx.target.loaded, SHOT_SEPARATOR.join(shots) + SHOT_SEPARATOR,
                                             ctx.settings.batch_size, ctx.target.max_tokens)
    return ctx.shared[key]


def shots_hash(shots: list[str]) -> str:
    return hashlib.sha256("\x00".join(shots).encode("utf-8")).hexdigest()[:16]


class _PrefixMethod(Method):
    uses_labels = True
    fusable = True
    reads_prefix = True
    higher_is_member = True

    def cache_settings(self, ctx: ScoringContext) -> dict:
        shots = prefix_shots(ctx)
        return {"max_tokens": ctx.target.max_tokens,
                "prefix_members": shots_hash(shots[1]), "prefix_nonmembers": shots_hash(shots[0])}


@register
class Recall(_PrefixMethod):
    """NLL(x | non-member prefix) / NLL(x): higher for members (ReCaLL)."""

    name = "recall"

    def raw_statistic(self, texts, ctx):
        conditional = prefixed(ctx, prefix_shots(ctx)[0]).mean_logprobs(texts)
        return conditional / ctx.target.mean_logprobs(texts)


@register
class ConRecall(_PrefixMethod):
    """(NLL(x | non-member prefix) - gamma NLL(x | member prefix)) / NLL(x) (Con-ReCall)."""

    name = "con-recall"

    def cache_settings(self, ctx):
        return {**super().cache_settings(ctx), "gamma": ctx.settings.con_recall_gamma}

    def raw_statistic(self, texts, ctx):
        shots = prefix_shots(ctx)
        non = prefixed(ctx, shots[0]).mean_logprobs(texts)
        mem = prefixed(ctx, shots[1]).mean_logprobs(texts)
        # log-likelihoods are -NLL: (-non + gamma mem) / -ll = (non - gamma mem) / ll
        return (non - ctx.settings.con_recall_gamma * mem) / ctx.target.mean_logprobs(texts)
