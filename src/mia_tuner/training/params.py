"""The trainable parameters of a model (an adapter, a defensive prompt) as a state to keep,
restore and checkpoint."""

from __future__ import annotations

import torch

from mia_tuner.errors import ModelError


def trainable_state(model) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable parameters (the adapter), by name."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()
            if p.requires_grad}


@torch.no_grad()
def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (from ``trainable_state``) back into the model's parameters."""
    params = dict(model.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise ModelError(f"{len(missing)} adapter parameter(s) not in the model, e.g. {missing[0]}")
    for name, value in state.items():
        params[name].copy_(value.to(params[name].device, params[name].dtype))
