"""Wrap a causal LM in the trainable adapter MIA-Tuner trains (peft), and run it.

* ``prompt`` (default): a soft prompt of ``num_virtual_tokens`` vectors prepended to the input
  embeddings (peft prompt tuning). peft's own TEXT initialisation loads a tokenizer by name
  (``tokenizer_name_or_path``), which fails for local and GGUF-derived tokenizers offline, so we
  do the same initialisation ourselves: the embeddings of the ids of ``init_text`` (no special
  tokens), tiled and truncated to ``num_virtual_tokens`` rows — exactly what peft's TEXT init
  computes. The saved adapter holds the trained vectors, so loading needs no tokenizer.
* ``lora`` (all linear layers), ``prefix`` (prefix tuning), ``ia3`` (peft's defaults for the
  architecture).

Only the adapter's parameters are trainable. LoRA and IA3 inject layers into the base model's
modules (the base model object is modified); prompt and prefix tuning leave it untouched.
Prompt tuning returns ``num_virtual_tokens + T`` logit positions: ``forward_logits`` drops the
extra leading positions so the logits line up with ``input_ids`` (see training.losses).
"""

from __future__ import annotations

import warnings

import torch

from mia_tuner.errors import ModelError
from mia_tuner.models.kv_cache import returned_cache, with_cache


def adapter_config(kind: str, config):
    """The peft config for ``kind`` (prompt | lora | prefix | ia3) from a TunerConfig."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType

    task = TaskType.CAUSAL_LM
    if kind == "prompt":
        return PromptTuningConfig(task_type=task, num_virtual_tokens=config.num_virtual_tokens)
    if kind == "lora":
        return LoraConfig(task_type=task, r=config.lora_rank, lora_alpha=2 * config.lora_rank,
                          lora_dropout=0.0, target_modules="all-linear")
    if kind == "prefix":
        return PrefixTuningConfig(task_type=task, num_virtual_tokens=config.num_virtual_tokens)
    if kind == "ia3":
        return IA3Config(task_type=task)
    raise ModelError(f"unknown peft kind {kind!r}; choose prompt, lora, prefix or ia3")


def init_text_ids(tokenizer, text: str, n: int) -> list[int]:
    """Ids of ``text`` (no special tokens) tiled and truncated to ``n`` (peft's TEXT rule)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ModelError(f"the soft-prompt init text {text!r} has no tokens")
    repeats = -(-n // len(ids))  # ceil
    return (ids * repeats)[:n]


@torch.no_grad()
def init_prompt_from_text(peft_model, tokenizer, text: str) -> None:
    """Set the soft prompt to the input embeddings of ``text`` (see the module docstring)."""
    encoder = peft_model.prompt_encoder[peft_model.active_adapter]
    n = encoder.embedding.weight.shape[0]
    ids = torch.tensor(init_text_ids(tokenizer, text, n), dtype=torch.long)
    embeddings = peft_model.get_input_embeddings()
    vectors = embeddings(ids.to(embeddings.weight.device))
    encoder.embedding.weight.copy_(vectors.to(encoder.embedding.weight.dtype))


def wrap_model(model, tokenizer, config):
    """A peft model around ``model`` with the adapter ``config.peft``; only it is trainable."""
    from peft import get_peft_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, adapter_config(config.peft, config))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"cannot add a {config.peft} adapter to this model: {exc}") from exc
    if config.peft == "prompt":
        init_prompt_from_text(peft_model, tokenizer, config.init_text)
    if getattr(config, "gradient_checkpointing", False):
        base = peft_model.get_base_model()
        if not getattr(base, "supports_gradient_checkpointing", False):
            raise ModelError(f"{type(base).__name__} does not support gradient checkpointing")
        # non-reentrant: the gradient reaches a soft prompt that enters as input embeddings
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return peft_model


def count_parameters(model) -> dict[str, int]:
    """Trainable and total parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def forward_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits aligned with ``input_ids``: virtual-token positions are dropped.

    The output layer runs on the ``T`` real positions only (``logits_to_keep``), not on the
    soft prompt's: with a large vocabulary (Gemma: 262k) it is a large share of the step.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            logits = model(input_ids=input_ids, attention_mask=attention_mask,
                           logits_to_keep=input_ids.shape[1]).logits
        except TypeError:  # a model class without logits_to_keep: every position
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    extra = logits.shape[1] - input_ids.shape[1]
    if extra < 0:
        raise ModelError(f"the model returned {logits.shape[1]} positions for {input_ids.shape[1]} inputs")
    return logits[:, extra:]


def common_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many leading tokens every row of the batch shares (each row keeps at least one)."""
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0)
    shared = int(same.long().cumprod(0).sum())
    return min(shared, int(attention_mask.sum(1).min()) - 1)


def shared_prefix_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``forward_logits`` of a prompt-tuned model, with the part every row shares (the soft
    prompt and the common leading tokens, e.g. a chat template's opening) run once per batch.

    The shared part's keys and values (with their gradient to the soft prompt) are repeated
    for the batch, and only each row's own tokens go through the model; the shared positions'
    logits are repeated too. Same logits as ``forward_logits`` up to float rounding.
    """
    peft_model = getattr(model, "module", model)  # under DDP
    n = common_prefix_length(input_ids, attention_mask)
    if n < 1 or getattr(getattr(peft_model, "active_peft_config", None), "peft_type", None) != "PROMPT_TUNING":
        return forward_logits(model, input_ids, attention_mask)
    base = peft_model.get_base_model()
    embed = base.get_input_embeddings()
    prompt = peft_model.get_prompt(batch_size=1)
    prefix = torch.cat([prompt.to(embed.weight.dtype), embed(input_ids[:1, :n])], dim=1)
    out = base(inputs_embeds=prefix, use_cache=True, logits_to_keep=n)
    cache = returned_cache(out)
    cache.batch_repeat_interleave(input_ids.shape[0])
    virtual = prompt.shape[1]
    mask = torch.cat([attention_mask.new_ones(input_ids.shape[0], virtual + n), attention_mask[:, n:]], 1)
    rest = base(input_ids=input_ids[:, n:], attention_mask=mask, **with_cache(base, cache),
                logits_to_keep=input_ids.shape[1] - n).logits
    return torch.cat([out.logits.expand(input_ids.shape[0], -1, -1), rest], dim=1)
