"""Next-token NLL over a large vocabulary without holding the full (B, T, V) logits.

A causal LM's output layer turns each position's hidden state into V logits. For a training
step the naive route keeps all B·T·V of them in fp32, their log-softmax and their gradient:
Gemma-3-270m (V = 262k) needs several GB for 16 texts of ~190 tokens. Here the model's forward
returns its last hidden states instead (the output layer is bypassed for the duration of the
call), and the output layer, log-softmax and gather run on a few positions at a time.

The gradient needs no logits either. With the output layer frozen (soft prompts, LoRA and the
defences never train it), the NLL of target y at a position depends on that position's hidden
state h alone, and d NLL / d h = Wᵀ(p − onehot(y)) (times the soft-capping derivative where
the model caps its logits): a vector of the hidden size, computed chunk by chunk in the
forward pass and kept. The backward only scales it by the incoming per-position gradient:
no logits are recomputed or stored. Where the output layer does train, each chunk runs under
activation checkpointing instead (its logits recomputed in the backward). Either way the
numbers are those of the full computation up to float rounding.
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

    def trains(self) -> bool:
        """Whether the output layer's own parameters take gradients."""
        return any(p.requires_grad for p in self.layer.parameters())

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.capped(F.linear(hidden, self.layer.weight, self.layer.bias).float())[0]

    def capped(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the model's logits from the output layer's ``raw`` ones, d logits / d raw or None):
        soft-capping ``c·tanh(raw/c)`` has derivative ``1 − tanh²``."""
        if not self.softcap:
            return raw, None
        tanh = torch.tanh(raw / self.softcap)
        return tanh * self.softcap, 1 - tanh * tanh


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


class _FrozenHeadNLL(torch.autograd.Function):
    """Token NLLs of one chunk with d NLL / d hidden computed in the forward (frozen head)."""

    @staticmethod
    def forward(ctx, hidden, targets, head: OutputHead):
        weight, bias = head.layer.weight, head.layer.bias
        logits, cap_slope = head.capped(F.linear(hidden, weight, bias).float())
        log_probs = F.log_softmax(logits, dim=-1)
        index = targets.clamp(min=0).unsqueeze(-1)
        nll = -log_probs.gather(-1, index).squeeze(-1)
        slope = log_probs.exp_().scatter_add_(-1, index, -torch.ones_like(index, dtype=log_probs.dtype))
        if cap_slope is not None:
            slope.mul_(cap_slope)
        ctx.save_for_backward((slope.to(weight.dtype) @ weight).to(hidden.dtype))
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        (slope_hidden,) = ctx.saved_tensors
        return grad_nll.unsqueeze(-1).to(slope_hidden.dtype) * slope_hidden, None, None


def token_nll(hidden: torch.Tensor, head: OutputHead, input_ids: torch.Tensor,
              chunk: int | None = None) -> torch.Tensor:
    """(B, T − 1) NLL of ``input_ids[:, 1:]``, each predicted from the hidden state before it.

    Padding and ignored targets get a value too (of token id max(id, 0)); mask them outside.
    No chunk's logits outlive its computation (see the module docstring for the gradient).
    """
    if hidden.shape[:2] != input_ids.shape:
        raise ValueError(f"hidden states {tuple(hidden.shape)} and input_ids {tuple(input_ids.shape)} "
                         "must share (B, T)")
    chunk = chunk or CHUNK_POSITIONS
    targets = input_ids[:, 1:]
    n = targets.shape[1]
    parts = []
    for start in range(0, n, chunk):
        h, y = hidden[:, start:min(start + chunk, n)], targets[:, start:start + chunk]
        if not (torch.is_grad_enabled() and h.requires_grad):
            parts.append(_chunk_nll(h, y, head))
        elif head.trains():
            parts.append(checkpoint(_chunk_nll, h, y, head, use_reentrant=False))
        else:
            parts.append(_FrozenHeadNLL.apply(h, y, head))
    return torch.cat(parts, dim=1)


def _chunk_kl(hidden: torch.Tensor, hidden_reference: torch.Tensor, head: OutputHead,
              head_reference: OutputHead) -> torch.Tensor:
    """KL(reference ‖ model) per position of one chunk (B, C), from both models' hidden states."""
    log_q = F.log_softmax(head.logits(hidden), dim=-1)
    log_p = F.log_softmax(head_reference.logits(hidden_reference), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def token_kl(hidden: torch.Tensor, hidden_reference: torch.Tensor, head: OutputHead,
             chunk: int | None = None, head_reference: OutputHead | None = None) -> torch.Tensor:
    """(B, T) KL divergence, in nats, of the next-token distribution at each position under the
    model (``hidden``) from the one under a reference model (``hidden_reference``, e.g. the
    model before a defence; no gradient is taken through it). The reference's logits come from
    ``head_reference`` (default: ``head``, the one output layer a model and its defence share).
    With a gradient each chunk is checkpointed: its logits are recomputed in the backward."""
    # a reference with its own head may have another hidden size; one head needs one shape
    compared = hidden.shape[:2] if head_reference is not None else hidden.shape
    if compared != hidden_reference.shape[:len(compared)] or hidden.dim() != hidden_reference.dim():
        raise ValueError(f"hidden states {tuple(hidden.shape)} and {tuple(hidden_reference.shape)} differ")
    chunk = chunk or CHUNK_POSITIONS
    head_reference = head_reference or head
    reference = hidden_reference.detach()
    parts = []
    for start in range(0, hidden.shape[1], chunk):
        h, r = hidden[:, start:start + chunk], reference[:, start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk_kl, h, r, head, head_reference, use_reentrant=False))
        else:
            parts.append(_chunk_kl(h, r, head, head_reference))
    return torch.cat(parts, dim=1)
