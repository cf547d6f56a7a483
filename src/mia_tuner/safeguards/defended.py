"""The defended model: the base model with a defensive soft prompt applied to every input.

``DefendedModel`` wraps a causal LM and prepends its ``prompt`` (n vectors in the input
embedding space) to every sequence it is given, the way a publisher's API would apply the
defence to every request. It behaves like the model it wraps for everything the toolkit does
with a model: its logits are aligned with the caller's ``input_ids`` (the prompt's own
positions are dropped), a key/value cache returned by it already holds the prompt (so a
follow-up call with that cache does not prepend it twice: ReCaLL's shared prefix), and a peft
adapter can be put on top of it (an attacker's own soft prompt or LoRA, as MIA-Tuner trains).

``remove_defence`` gives back the wrapped model untouched: the wrapper changes no weight.
"""

from __future__ import annotations

from contextlib import contextmanager

from dataclasses import replace

import torch
from torch import nn

from mia_tuner.models.kv_cache import with_cache


class DefendedModel(nn.Module):
    """``model`` with ``prompt`` (n, hidden) prepended to every input (see the module docstring)."""

    def __init__(self, model, prompt: torch.Tensor):
        super().__init__()
        self.model = model
        embed = model.get_input_embeddings()
        if prompt.dim() != 2 or prompt.shape[1] != embed.weight.shape[1]:
            raise ValueError(f"a defensive prompt must have shape (n, {embed.weight.shape[1]}), "
                             f"got {tuple(prompt.shape)}")
        self.prompt = nn.Parameter(prompt.detach().to(embed.weight.device, embed.weight.dtype).clone())

    # what callers read off a transformers model
    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.prompt.device

    @property
    def dtype(self) -> torch.dtype:
        return self.prompt.dtype

    @property
    def n_virtual(self) -> int:
        return self.prompt.shape[0]

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    def prepare_inputs_for_generation(self, *args, **kwargs):  # peft reads it when wrapping
        return self.model.prepare_inputs_for_generation(*args, **kwargs)

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return getattr(self.model, "supports_gradient_checkpointing", False)

    def gradient_checkpointing_enable(self, **kwargs):
        return self.model.gradient_checkpointing_enable(**kwargs)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, past_key_values=None,
                logits_to_keep: int = 0, **kwargs):
        """The wrapped model's output for ``[prompt; input]`` with the prompt's positions
        removed from the logits; with a non-empty cache the prompt is already in it."""
        past_key_values = kwargs.pop("cache", past_key_values)  # transformers 5 names it `cache`
        if past_key_values is not None and past_key_values.get_seq_length() > 0:
            if attention_mask is not None:  # the mask covers the cached positions + the new ones
                attention_mask = self._with_prompt_mask(attention_mask)
            return self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                              logits_to_keep=logits_to_keep, **with_cache(self.model, past_key_values),
                              **kwargs)
        if inputs_embeds is None:
            inputs_embeds = self.model.get_input_embeddings()(input_ids)
        batch = inputs_embeds.shape[0]
        inputs_embeds = torch.cat([self.prompt.unsqueeze(0).expand(batch, -1, -1).to(inputs_embeds.dtype),
                                   inputs_embeds], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        else:
            attention_mask = self._with_prompt_mask(attention_mask)
        if past_key_values is not None:
            kwargs.update(with_cache(self.model, past_key_values))
        kept = logits_to_keep if logits_to_keep else inputs_embeds.shape[1] - self.n_virtual
        # logits_to_keep counts from the end: the last ``kept`` positions are the caller's
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, logits_to_keep=kept,
                          **kwargs)

    def _with_prompt_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        ones = attention_mask.new_ones(attention_mask.shape[0], self.n_virtual)
        return torch.cat([ones, attention_mask], dim=1)


@contextmanager
def undefended(model):
    """The model without its defence inside the block: the wrapped model of a defensive prompt,
    or a LoRA model with its adapter disabled."""
    model = getattr(model, "module", model)  # under DDP
    if isinstance(model, DefendedModel):
        yield model.model
    else:
        with model.disable_adapter():
            yield model


def defended(loaded, prompt: torch.Tensor, fingerprint: str):
    """A LoadedModel whose model is ``loaded.model`` behind the defensive ``prompt``; its
    fingerprint names base and defence, so scores of the two never share a cache entry."""
    model = DefendedModel(loaded.model, prompt)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return replace(loaded, model=model, fingerprint=fingerprint)


def remove_defence(loaded_defended, base_fingerprint: str):
    """The undefended LoadedModel (the wrapped model, unchanged)."""
    model = loaded_defended.model
    if not isinstance(model, DefendedModel):
        raise ValueError("this model carries no defensive prompt")
    return replace(loaded_defended, model=model.model, fingerprint=base_fingerprint)
