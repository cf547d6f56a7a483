"""Next-token NLL over a large vocabulary without holding the full (B, T, V) logits.

A causal LM's output layer turns each position's hidden state into V logits. For a training
step the naive route keeps all B·T·V of them in fp32, their log-softmax and their gradient:
Gemma-3-270m (V = 262k) needs several GB for 16 texts of ~190 tokens. Here the model's forward
returns its last hidden states instead (the output layer is bypassed for the duration of the
call), and the output layer, log-softmax and gather run on a few positions at a time under
activation checkpointing, so the backward recomputes each chunk's logits rather than storing
them. The numbers are those of the full computation up to float rounding.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mia_tuner.errors import ModelError

CHUNK_POSITIONS = 32  # positions per chunk: 16 texts x 32 x 262k fp32 logits = 0.5 GB for Gemma


def base_model(model):
    """The transformers model under a DDP and/or peft wrapper."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class OutputHead:
    """The model's output layer (and Gemma's final logit soft-capping) as a function of hidden
    states: ``logits(hidden)`` gives what the model itself would have returned, in fp32."""

    def __init__(self, model):
        base = base_model(model)
        self.layer = base.get_output_embeddings()
        if not isinstance(self.layer, torch.nn.Linear):
            raise ModelError(f"chunked losses need a linear output layer; {type(base).__name__} has "
                             f"{type(self.layer).__name__}")
        self.softcap = getattr(base.config, "final_logit_softcapping", None)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden, self.layer.weight, self.layer.bias).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


@contextmanager
def hidden_states_out(model):
    """Within the block the model's forward returns its last hidden states (B, T, H) where it
    returned logits (``logits_to_keep`` still applies); yields the ``OutputHead`` that maps
    them to logits."""
    head = OutputHead(model)
    head.layer.forward = _identity  # an instance attribute shadows the class's forward
    try:
        yield head
    finally:
        del head.layer.forward


def _identity(hidden: torch.Tensor) -> torch.Tensor:
    return hidden


def _chunk_nll(hidden: torch.Tensor, targets: torch.Tensor, head: OutputHead) -> torch.Tensor:
    log_probs = F.log_softmax(head.logits(hidden), dim=-1)
    return -log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def token_nll(hidden: torch.Tensor, head: OutputHead, input_ids: torch.Tensor,
              chunk: int = CHUNK_POSITIONS) -> torch.Tensor:
    """(B, T − 1) NLL of ``input_ids[:, 1:]``, each predicted from the hidden state before it.

    Padding and ignored targets get a value too (of token id max(id, 0)); mask them outside.
    Under autograd each chunk is checkpointed: its logits exist only while it is computed.
    """
    if hidden.shape[:2] != input_ids.shape:
        raise ValueError(f"hidden states {tuple(hidden.shape)} and input_ids {tuple(input_ids.shape)} "
                         "must share (B, T)")
    targets = input_ids[:, 1:]
    n = targets.shape[1]
    parts = []
    for start in range(0, n, chunk):
        h, y = hidden[:, start:min(start + chunk, n)], targets[:, start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk_nll, h, y, head, use_reentrant=False))
        else:
            parts.append(_chunk_nll(h, y, head))
    return torch.cat(parts, dim=1)
