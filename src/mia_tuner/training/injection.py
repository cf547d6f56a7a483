"""Continued pre-training of a causal LM on chosen texts: how members become members.

Used to build controlled-membership sets, where the labels are exact because we decide what
the model was trained on. Full fine-tuning by default; LoRA (merged back into the weights) on
request. Runs under ``accelerate`` (CPU, one or several GPUs, mixed precision).
"""

from __future__ import annotations

import logging
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..errors import Interrupted
from ..models.batching import pad_batch
from .checkpoint import Checkpoint
from .injection_config import InjectionConfig

log = logging.getLogger(__name__)


def _collate(sequences: list[list[int]], pad_id: int) -> dict:
    input_ids, attention_mask = pad_batch(sequences, pad_id)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _with_lora(model, config: InjectionConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


class _Progress:
    """Where the injection stands, and when its state was last saved."""

    def __init__(self, generator: torch.Generator):
        self.epoch, self.step, self.history = 0, 0, []
        self.generator_at_epoch_start = generator.get_state()
        self.last_save = time.perf_counter()
        self.seconds_before = 0.0


def continue_pretraining(model, tokenizer, texts: list[str], config: InjectionConfig, *,
                         checkpoint: Checkpoint | None = None, checkpoint_every: float = 60.0,
                         on_epoch=None, desc: str = "inject members") -> dict:
    """Train ``model`` in place on ``texts`` with the causal-LM loss; returns a training log.

    Batches are drawn as a shuffled DataLoader draws them (seeded). With a ``checkpoint`` the
    whole training state is saved every ``checkpoint_every`` seconds and at every epoch's end,
    and a saved state of the same run is resumed (the batches done are skipped, not redone).
    ``on_epoch(epoch, model)`` runs after every epoch (1-based; the model in eval mode, a LoRA
    adapter not merged yet), before that epoch's state is saved.
    """
    set_seed(config.seed)
    accelerator = Accelerator()
    sequences = [ids[: config.max_tokens]
                 for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    generator = torch.Generator().manual_seed(config.seed)
    order = DataLoader(range(len(sequences)), batch_size=config.batch_size, shuffle=True,
                       generator=generator, collate_fn=list)
    trained = _with_lora(model, config) if config.method == "lora" else model
    trained.train()
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad],
                                  lr=config.learning_rate, weight_decay=0.0)
    total_steps = config.epochs * len(order)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total_steps)
    trained, optimizer = accelerator.prepare(trained, optimizer)
    state = _Progress(generator)
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        _restore(saved, state, accelerator.unwrap_model(trained), optimizer, scheduler)
    started = time.perf_counter()
    progress = tqdm(total=total_steps, initial=len(state.history), desc=desc, unit="step")

    def save() -> None:
        if checkpoint is not None and accelerator.is_main_process:
            checkpoint.save(_snapshot(state, accelerator.unwrap_model(trained), optimizer, scheduler,
                                      state.seconds_before + time.perf_counter() - started))
        state.last_save = time.perf_counter()

    try:
        while state.epoch < config.epochs:
            generator.set_state(state.generator_at_epoch_start)  # the same batches after a resume
            for i, rows in enumerate(order):
                if i < state.step:
                    continue
                mine = rows[accelerator.process_index::accelerator.num_processes]
                batch = _collate([sequences[j] for j in mine], tokenizer.pad_token_id)
                loss = trained(**{k: v.to(accelerator.device) for k, v in batch.items()}).loss
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                state.history.append({"epoch": state.epoch, "loss": float(loss.detach())})
                state.step = i + 1
                progress.update(1)
                progress.set_postfix(loss=f"{state.history[-1]['loss']:.3f}")
                if time.perf_counter() - state.last_save > checkpoint_every:
                    save()
            state.epoch, state.step = state.epoch + 1, 0
            state.generator_at_epoch_start = generator.get_state()
            if on_epoch is not None:
                unwrapped = accelerator.unwrap_model(trained)
                unwrapped.eval()
                on_epoch(state.epoch, unwrapped)
                unwrapped.train()
            if state.epoch < config.epochs:
                save()
    except KeyboardInterrupt:
        where = "saved in " + str(checkpoint.directory) if checkpoint is not None else "not saved"
        raise Interrupted(f"injection stopped at step {len(state.history)} of {total_steps}; the last "
                          f"state ({checkpoint_every:g} s at most before) is {where}: re-run the "
                          "same command to resume") from None
    finally:
        progress.close()
    trained = accelerator.unwrap_model(trained)
    if config.method == "lora":
        trained = trained.merge_and_unload()
    trained.eval()
    history = state.history
    return {"model": trained, "steps": len(history),
            "seconds": state.seconds_before + time.perf_counter() - started,
            "first_loss": history[0]["loss"] if history else None,
            "last_epoch_loss": _mean([h["loss"] for h in history if h["epoch"] == config.epochs - 1])}


def _snapshot(state: _Progress, model, optimizer, scheduler, seconds: float) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": state.epoch, "step": state.step,
            "generator": state.generator_at_epoch_start, "history": state.history, "seconds": seconds}


def _restore(saved: dict, state: _Progress, model, optimizer, scheduler) -> None:
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    state.epoch, state.step, state.history = saved["epoch"], saved["step"], saved["history"]
    state.generator_at_epoch_start = saved["generator"]
    state.seconds_before = saved["seconds"]
    log.info("resuming the injection at epoch %d, step %d", state.epoch + 1, state.step)


def _mean(values):
    return sum(values) / len(values) if values else None
