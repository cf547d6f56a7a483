"""Neighbourhood comparison (Mattern et al.): the text's loss against the mean loss of
perturbed neighbours of it.

Neighbours come from, in order of preference:
1. a JSONL file ``{"text": ..., "neighbors": [...]}`` (``--neighbors-file``);
2. a masked LM (``--perturbation-model``, e.g. ``roberta-base`` where the hub is reachable),
   which fills masked words as in the original attack;
3. offline by default, word replacement driven by the target causal LM itself: single-token
   words are swapped for one of the model's own top-20 next-token predictions at that position
   (taken from the forward pass the other methods already ran, so it costs no extra pass).
   Each neighbour changes ``neighbor_fraction`` of the eligible words (at least one).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..data.types import text_hash
from ..errors import MethodError
from .base import Method, ScoringContext, register
from .token_stats import TokenStats

log = logging.getLogger(__name__)

NEIGHBOR_TOPK = 20
WORD_START_MARKERS = ("Ġ", "▁", " ")


def text_rng(seed: int, text: str) -> np.random.Generator:
    """A generator that depends only on the seed and the text (not on batching or order)."""
    return np.random.default_rng([seed, int(text_hash(text)[:12], 16)])


def word_token_mask(tokenizer) -> np.ndarray:
    """True for vocabulary entries that are a whole word with its leading space."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.array([
        isinstance(t, str) and len(t) > 1 and t[0] in WORD_START_MARKERS and t[1:].isalpha()
        for t in tokens
    ])


def continues_word(tokenizer_tokens: list[str], position: int) -> bool:
    """Whether the token at ``position`` glues onto the previous one (no space, letters)."""
    if position >= len(tokenizer_tokens):
        return False
    token = tokenizer_tokens[position] or ""
    return bool(token) and token[0] not in WORD_START_MARKERS and token[0].isalnum()


def causal_lm_neighbors(stats: TokenStats, tokenizer, word_mask: np.ndarray, *, n: int,
                        fraction: float, rng: np.random.Generator) -> list[str]:
    """``n`` neighbours of one text by swapping single-token words for the model's predictions."""
    ids = stats.token_ids
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    choices: dict[int, list[int]] = {}
    for t in range(1, len(ids)):
        if not word_mask[ids[t]] or continues_word(tokens, t + 1):
            continue
        candidates = [int(c) for c in stats.topk[t - 1] if c != ids[t] and word_mask[c]]
        if candidates:
            choices[t] = candidates
    if not choices:  # nothing to swap: the text is its own neighbour (score 0, no evidence)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        log.warning("no replaceable word in %r; using the text itself as neighbour", text[:60])
        return [text] * n
    positions = sorted(choices)
    n_replace = max(1, int(round(fraction * len(positions))))
    neighbours = []
    for _ in range(n):
        new_ids = ids.copy()
        for t in rng.choice(positions, size=n_replace, replace=False):
            new_ids[t] = rng.choice(choices[int(t)])
        neighbours.append(tokenizer.decode(new_ids, skip_special_tokens=True))
    return neighbours


def masked_lm_neighbors(texts: list[str], model_name: str, *, n: int, fraction: float,
                        seed: int, topk: int = 10) -> list[list[str]]:
    """Neighbours by masking words and filling each with a sampled top-k masked-LM guess."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from ..hub import hub_unreachable

    if not Path(model_name).is_dir() and (reason := hub_unreachable()):
        raise MethodError(f"--perturbation-model {model_name!r} is no local folder and the hub "
                          f"cannot be reached ({reason}); leave it out for offline neighbours")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=False)
        model = AutoModelForMaskedLM.from_pretrained(model_name, trust_remote_code=False).eval()
    except (OSError, ValueError) as error:
        raise MethodError(f"cannot load the perturbation model {model_name!r}: {error}") from None
    if tokenizer.mask_token is None:
        raise MethodError(f"{model_name} has no mask token; it is not a masked LM")
    result = []
    for text in texts:
        rng = text_rng(seed, text)
        words = text.split()
        n_replace = max(1, int(round(fraction * len(words))))
        variants, masked_positions = [], []
        for _ in range(n):
            positions = sorted(rng.choice(len(words), size=min(n_replace, len(words)), replace=False))
            variants.append(" ".join(tokenizer.mask_token if i in positions else w
                                     for i, w in enumerate(words)))
            masked_positions.append(positions)
        batch = tokenizer(variants, return_tensors="pt", padding=True, truncation=True)
        with torch.inference_mode():
            logits = model(**batch).logits
        neighbours = []
        for row, positions in enumerate(masked_positions):
            slots = (batch["input_ids"][row] == tokenizer.mask_token_id).nonzero().flatten().tolist()
            new_words = list(words)
            for word_index, slot in zip(positions, slots):
                guesses = [tokenizer.decode([g]).strip() for g in logits[row, slot].topk(topk).indices]
                guesses = [g for g in guesses if g and g != words[word_index]] or [words[word_index]]
                new_words[word_index] = guesses[int(rng.integers(len(guesses)))]
            neighbours.append(" ".join(new_words))
        result.append(neighbours)
    return result


def read_neighbors_file(path: str) -> dict[str, list[str]]:
    """``{text: [neighbour, ...]}`` from a JSONL file of ``{"text", "neighbors"}`` rows."""
    table = {}
    shape = "expected {'text': str, 'neighbors': [str, ...]}"
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise MethodError(f"cannot read the neighbours file {path}: {error}") from None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise MethodError(f"{path}, line {line_no}: not valid JSON ({error})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) \
                or not isinstance(row.get("neighbors"), list) or not row["neighbors"]:
            raise MethodError(f"{path}, line {line_no}: {shape}")
        table[row["text"]] = [str(x) for x in row["neighbors"]]
    return table


@register
class Neighbor(Method):
    """NLL of the text minus the mean NLL of its neighbours: lower for members."""

    name = "neighbor"
    higher_is_member = False
    fusable = True
    needs_topk = True

    def source(self) -> str:
        s = self.settings
        if s.neighbors_file:
            return f"file:{Path(s.neighbors_file).resolve()}"
        if s.perturbation_model:
            return f"mlm:{s.perturbation_model}"
        return "causal-lm-word-replacement"

    def cache_settings(self, ctx: ScoringContext) -> dict:
        s = self.settings
        return {"max_tokens": ctx.target.max_tokens, "source": self.source(), "seed": ctx.seed,
                "num_neighbors": s.num_neighbors, "fraction": s.neighbor_fraction}

    def neighbors(self, texts: list[str], ctx: ScoringContext) -> list[list[str]]:
        s = self.settings
        if s.neighbors_file:
            if getattr(self, "_table", None) is None:  # read once, used batch by batch
                self._table = read_neighbors_file(s.neighbors_file)
            table = self._table
            missing = [t for t in texts if t not in table]
            if missing:
                raise MethodError(f"{len(missing)} text(s) have no neighbours in {s.neighbors_file}")
            return [table[t] for t in texts]
        if s.perturbation_model:
            return masked_lm_neighbors(ctx.target.seen_texts(texts), s.perturbation_model, n=s.num_neighbors,
                                       fraction=s.neighbor_fraction, seed=ctx.seed)
        tokenizer = ctx.target.loaded.tokenizer
        if getattr(ctx.target, "word_mask", None) is None:
            ctx.target.word_mask = word_token_mask(tokenizer)
        word_mask = ctx.target.word_mask
        if ctx.target.topk < NEIGHBOR_TOPK:
            raise MethodError("the target's statistics carry no top-k candidates; build its "
                              f"StatsProvider with topk={NEIGHBOR_TOPK} to generate neighbours")
        return [causal_lm_neighbors(stats, tokenizer, word_mask, n=s.num_neighbors,
                                    fraction=s.neighbor_fraction, rng=text_rng(ctx.seed, text))
                for stats, text in zip(ctx.target.get(texts), texts)]

    def raw_statistic(self, texts, ctx):
        neighbour_lists = self.neighbors(texts, ctx)
        flat = [n for group in neighbour_lists for n in group]
        neighbour_ll = iter(ctx.target.mean_logprobs(flat))
        own = ctx.target.get(texts)
        out = []
        for stats, group in zip(own, neighbour_lists):
            mean_neighbour_ll = np.mean([next(neighbour_ll) for _ in group])
            out.append(mean_neighbour_ll - stats.mean_logprob)
        return np.array(out)
