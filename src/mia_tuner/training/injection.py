"""Continued pre-training of a causal LM on chosen texts: how members become members.

Used to build controlled-membership sets, where the labels are exact because we decide what
the model was trained on. Full fine-tuning by default; LoRA (merged back into the weights) on
request. Runs under ``accelerate`` (CPU, one or several GPUs, mixed precision).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..methods.token_stats import pad_batch

log = logging.getLogger(__name__)


@dataclass
class InjectionConfig:
    # One epoch at 6e-5 mimics pre-training exposure (seen once) and gives Loss AUROC ~0.62 on
    # the offline default (BENCHMARKS.md); 2 epochs at 3e-5 gave 0.63 for twice the time.
    epochs: int = 1
    learning_rate: float = 6e-5
    batch_size: int = 8
    max_tokens: int = 256
    method: str = "full"  # full | lora
    lora_rank: int = 16
    seed: int = 42


def _collate(pad_id: int):
    def collate(sequences):
        input_ids, attention_mask = pad_batch(sequences, pad_id)
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return collate


def _with_lora(model, config: InjectionConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def continue_pretraining(model, tokenizer, texts: list[str], config: InjectionConfig) -> dict:
    """Train ``model`` in place on ``texts`` with the causal-LM loss; returns a training log."""
    set_seed(config.seed)
    accelerator = Accelerator()
    sequences = [ids[: config.max_tokens]
                 for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(sequences, batch_size=config.batch_size, shuffle=True,
                        collate_fn=_collate(tokenizer.pad_token_id), generator=generator)
    trained = _with_lora(model, config) if config.method == "lora" else model
    if config.method not in ("full", "lora"):
        raise ValueError(f"unknown injection method {config.method!r}: use 'full' or 'lora'")
    trained.train()
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad],
                                  lr=config.learning_rate, weight_decay=0.0)
    total_steps = config.epochs * math.ceil(len(sequences) / config.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total_steps)
    trained, optimizer, loader, scheduler = accelerator.prepare(trained, optimizer, loader, scheduler)
    history, started = [], time.perf_counter()
    progress = tqdm(total=total_steps, desc="inject members", unit="step")
    for epoch in range(config.epochs):
        for batch in loader:
            loss = trained(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            history.append({"epoch": epoch, "loss": float(loss.detach())})
            progress.update(1)
            progress.set_postfix(loss=f"{history[-1]['loss']:.3f}")
    progress.close()
    trained = accelerator.unwrap_model(trained)
    if config.method == "lora":
        trained = trained.merge_and_unload()
    trained.eval()
    return {"model": trained, "steps": len(history), "seconds": time.perf_counter() - started,
            "first_loss": history[0]["loss"] if history else None,
            "last_epoch_loss": _mean([h["loss"] for h in history if h["epoch"] == config.epochs - 1])}


def _mean(values):
    return sum(values) / len(values) if values else None
