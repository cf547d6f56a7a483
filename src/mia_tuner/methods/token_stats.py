"""Per-token statistics of a causal LM on a text, computed once per text in padded batches.

Every reference-free score (Loss, Zlib, Min-K%, Min-K%++) and the neighbour candidates are
functions of these statistics, so one forward pass per text serves them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.types import text_hash
from ..errors import DataError
from ..models.batching import length_batches, pad_batch

log = logging.getLogger(__name__)


@dataclass
class TokenStats:
    """What the model says about one text, token by token.

    ``logprobs[t]`` is log p(x_{t+1} | x_{<=t}); ``mean[t]`` and ``std[t]`` are the mean and
    standard deviation of log p(z | x_{<=t}) for z drawn from that same next-token distribution
    (the Min-K%++ normalisers); ``top1[t]`` is the id of the most likely next token (so
    ``top1 != token_ids[1:]`` marks the positions the model gets wrong); ``topk[t]`` are the ids
    of the k most likely next tokens.
    """

    token_ids: np.ndarray
    logprobs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    topk: np.ndarray | None = None
    truncated: bool = False
    top1: np.ndarray | None = None

    @property
    def errors(self) -> np.ndarray:
        """True where the model's most likely next token is not the text's (its errors)."""
        if self.top1 is None:
            raise ValueError("these statistics were computed without the most likely tokens (light pass)")
        return self.top1 != self.token_ids[1:]

    @property
    def mean_logprob(self) -> float:
        """Mean token log-likelihood of the text (the negated language-model loss)."""
        return float(self.logprobs.mean())


CHUNK_ELEMENTS = 1 << 19  # ~2 MB of float32 logits: a chunk's passes stay in the CPU cache


def _chunks(n_positions: int, vocab: int):
    rows = max(1, CHUNK_ELEMENTS // vocab)
    return [slice(s, min(s + rows, n_positions)) for s in range(0, n_positions, rows)]


def stats_from_logits(logits: torch.Tensor, token_ids: torch.Tensor, topk: int = 0) -> TokenStats:
    """Statistics of one unpadded sequence from its logits (T, V) and ids (T,).

    Worked through in chunks of positions so that the several passes over the vocabulary
    (log-softmax, the two moments, top-k) read the cache rather than main memory.
    """
    body, targets = logits[:-1], token_ids[1:]
    parts: dict[str, list] = {"logprob": [], "mean": [], "std": [], "topk": [], "top1": []}
    for rows in _chunks(body.shape[0], body.shape[-1]):
        log_probs = torch.log_softmax(body[rows].float(), dim=-1)
        parts["top1"].append(log_probs.argmax(dim=-1))
        if topk:
            parts["topk"].append(log_probs.topk(topk, dim=-1).indices)
        probs = log_probs.exp()
        mean = torch.linalg.vecdot(probs, log_probs)
        centred = log_probs.sub_(mean.unsqueeze(-1))  # centred moments keep float32 accurate
        parts["logprob"].append(centred.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1) + mean)
        parts["mean"].append(mean)
        parts["std"].append(torch.linalg.vecdot(probs, centred.square_()).sqrt())
    joined = {k: torch.cat(v).cpu().numpy() for k, v in parts.items() if v}
    return TokenStats(
        token_ids=token_ids.cpu().numpy(),
        logprobs=joined["logprob"].astype(np.float64),
        mean=joined["mean"].astype(np.float64),
        std=joined["std"].astype(np.float64),
        topk=joined.get("topk"),
        top1=joined["top1"],
    )


def likelihood_from_logits(logits: torch.Tensor, token_ids: torch.Tensor, topk: int = 0) -> TokenStats:
    """Token log-probabilities only (one pass over the vocabulary instead of several)."""
    body, targets = logits[:-1], token_ids[1:].unsqueeze(-1)
    token_logprobs = torch.cat([
        body[rows].float().gather(-1, targets[rows]).squeeze(-1)
        - torch.logsumexp(body[rows].float(), dim=-1)
        for rows in _chunks(body.shape[0], body.shape[-1])])
    empty = np.empty(0)
    return TokenStats(token_ids=token_ids.cpu().numpy(),
                      logprobs=token_logprobs.cpu().numpy().astype(np.float64), mean=empty, std=empty)


class StatsProvider:
    """Computes and memoises ``TokenStats`` of texts under one model (in memory, per run).

    Texts are tokenised with the model's special tokens (a BOS token where the tokenizer adds
    one), truncated to ``max_tokens``, sorted by length and run in padded batches.
    """

    def __init__(self, loaded, *, batch_size: int = 8, max_tokens: int | None = None,
                 topk: int = 0, desc: str = "forward", always_full: bool = False):
        self.loaded = loaded
        # every pass computes the full statistics (a reference whose tokens are compared one by
        # one: a light pass first would mean a second forward pass later)
        self.always_full = always_full
        self.batch_size = batch_size
        self.max_tokens = max_tokens or loaded.max_tokens
        self.topk = topk
        self.desc = desc
        self._memo: dict[str, TokenStats] = {}
        self._mean_logprob: dict[str, float] = {}  # texts that only needed their likelihood
        self.n_forward_texts = 0  # texts actually run through the model (for tests and benches)
        self.n_truncated = 0  # over every text run, lowercased copies and neighbours included

    def get(self, texts: list[str]) -> list[TokenStats]:
        missing = list(dict.fromkeys(t for t in texts if text_hash(t) not in self._memo))
        if missing:
            self._compute(missing)
        return [self._memo[text_hash(t)] for t in texts]

    def mean_logprobs(self, texts: list[str]) -> np.ndarray:
        """Mean token log-likelihood of each text; texts not yet seen get a lighter pass that
        skips the Min-K%++ moments and top-k (neighbours need nothing more)."""
        if self.always_full:
            return np.array([stats.mean_logprob for stats in self.get(texts)])
        known = lambda h: h in self._memo or h in self._mean_logprob  # noqa: E731
        missing = list(dict.fromkeys(t for t in texts if not known(text_hash(t))))
        if missing:
            for text, stats in zip(missing, self._run(missing, light=True)):
                self._mean_logprob[text_hash(text)] = stats.mean_logprob
        return np.array([self._memo[h].mean_logprob if h in self._memo else self._mean_logprob[h]
                         for h in map(text_hash, texts)])

    def seen_texts(self, texts: list[str]) -> list[str]:
        """Each text as the model scored it: a truncated text is cut to its scored tokens.

        A method that combines the likelihood with a property of the text (its compressed
        size, its lowercased version, its likelihood under another model) must use this, so
        that both sides describe the same words.
        """
        decode = self.loaded.tokenizer.decode
        return [decode(s.token_ids, skip_special_tokens=True) if s.truncated else t
                for t, s in zip(texts, self.get(texts))]

    def count_too_long(self, texts: list[str]) -> int:
        """How many of ``texts`` exceed the token budget (and are truncated when scored)."""
        encoded = self.loaded.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        return sum(len(ids) > self.max_tokens for ids in encoded)

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        encoded = self.loaded.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        truncated = [len(ids) > self.max_tokens for ids in encoded]
        self.n_truncated += sum(truncated)
        return [ids[: self.max_tokens] for ids in encoded], truncated

    def _compute(self, texts: list[str]) -> None:
        for text, stats in zip(texts, self._run(texts, light=False)):
            self._memo[text_hash(text)] = stats

    def _run(self, texts: list[str], light: bool) -> list[TokenStats]:
        """Statistics of ``texts`` in their order, from length-sorted padded batches."""
        ids, truncated = self._tokenize(texts)
        too_short = [t for t, i in zip(texts, ids) if len(i) < 2]
        if too_short:
            raise DataError(f"{len(too_short)} text(s) have fewer than 2 tokens, so no token "
                            f"can be scored, e.g. {too_short[0]!r}")
        batches = length_batches([len(i) for i in ids], self.batch_size)
        results: list[TokenStats | None] = [None] * len(texts)
        for batch in tqdm(batches, desc=self.desc, unit="batch", leave=False, disable=len(batches) < 2):
            for index, stats in zip(batch, self._forward([ids[i] for i in batch], light)):
                stats.truncated = truncated[index]
                results[index] = stats
        self.n_forward_texts += len(texts)
        if any(truncated):
            log.warning("%d text(s) were longer than %d tokens and were truncated",
                        sum(truncated), self.max_tokens)
        return results

    @torch.inference_mode()
    def _forward(self, sequences: list[list[int]], light: bool = False) -> list[TokenStats]:
        input_ids, attention_mask = pad_batch(sequences, self.loaded.tokenizer.pad_token_id)
        device = self.loaded.device
        logits = self.loaded.model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
        ).logits
        compute = likelihood_from_logits if light else stats_from_logits
        return [compute(logits[row, : len(seq)], input_ids[row, : len(seq)], self.topk)
                for row, seq in enumerate(sequences)]

