"""Batches of token id lists as padded tensors (every layer that runs a model uses this)."""

from __future__ import annotations

import torch


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into (ids, attention mask) tensors."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


# A batch holds at most ``batch_size`` texts and at most ``batch_size * TOKENS_PER_TEXT`` padded
# positions: texts up to this long batch as before, a longer one takes the room of several, so
# one very long text neither pads a whole batch to its length nor multiplies its memory.
TOKENS_PER_TEXT = 512


def length_batches(lengths: list[int], batch_size: int, tokens_per_text: int | None = None) -> list[list[int]]:
    """Indices sorted by decreasing length, cut into batches of at most ``batch_size`` texts
    whose padded size (texts x longest) stays within ``batch_size * tokens_per_text`` (default
    TOKENS_PER_TEXT; a text longer than that budget goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    budget = batch_size * (tokens_per_text or TOKENS_PER_TEXT)
    batches: list[list[int]] = []
    for index in order:
        current = batches[-1] if batches else None
        # sorted longest first: the batch's first text sets its padded width
        if current and len(current) < batch_size and (len(current) + 1) * lengths[current[0]] <= budget:
            current.append(index)
        else:
            batches.append([index])
    return batches
