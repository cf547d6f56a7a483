"""Cost of one MIA-Tuner training step against a bare forward+backward (issue: MIA-Tuner).

In one process, on the same batches (B members + B non-members of WikiMIA-24 length 32) and
the same peft-wrapped model with the same soft prompt:
  * step: what `Trainer` times per step (encoding, the pipeline's loss, backward, AdamW and
    the schedule), read from its history: the median step of the Trainer's second epoch
    (steady state; epoch 1's median and the first, unmemoised encoding of a batch are
    reported apart as first_epoch_step_s and encode_cold_s);
  * bare: `model(input_ids, attention_mask, labels=...)` with transformers' own next-token loss,
    then `.backward()` — no pipeline, no optimiser.
The bare pass is timed before and after the Trainer (median of both rounds) so drift on this
shared machine hits both sides. Writes bench/results/train_step_speed.json (one record per model).

--memory: peak resident memory of training steps, each variant in a fresh process (so one's
peak cannot hide the other's): the pipeline as shipped (per-text losses from chunked,
checkpointed logits) against the same loss from the full (B, T, V) logits, as the pipeline
computed it before; WikiMIA-24 length-128 texts, B + B per batch; rows with `peak_rss_gb` are
added to the same file.

    .venv/bin/python bench/train_step_speed.py [--models smollm2-135m-instruct gemma-3-270m] [--steps 6]
    .venv/bin/python bench/train_step_speed.py --memory --models gemma-3-270m --steps 3
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mia_tuner.config import DataConfig, ModelConfig
from mia_tuner.data import load_membership_set
from mia_tuner.data.types import MembershipSet
from mia_tuner.models import load_model
from mia_tuner.training.losses import IGNORE_INDEX
from mia_tuner.training.trainer import Trainer, TrainerConfig, epoch_batches
from mia_tuner.tuner.config import TunerConfig
from mia_tuner.tuner.peft_setup import wrap_model
from mia_tuner.tuner.pipelines import make_pipeline
from blocks import refresh
from records import merge

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikimia24"
RESULTS = Path(__file__).resolve().parent / "results" / "train_step_speed.json"
VARIANTS = ["chunked", "full-logits", "chunked+checkpointing"]


def training_texts(n_per_class: int, split: str = "WikiMIA_length32") -> MembershipSet:
    data = load_membership_set(DataConfig(path=str(DATA), split=split))
    members = [t for t, y in zip(data.texts, data.labels) if y == 1][:n_per_class]
    nonmembers = [t for t, y in zip(data.texts, data.labels) if y == 0][:n_per_class]
    return MembershipSet(texts=members + nonmembers, labels=[1] * len(members) + [0] * len(nonmembers),
                         name="speed")


def bare_seconds(model, pipeline, train: MembershipSet, batches) -> list[float]:
    """Forward with transformers' LM loss + backward, per batch; gradients dropped after."""
    times = []
    model.train()
    for members, nonmembers in batches:
        rows = members + nonmembers
        batch = pipeline.encode([train.texts[i] for i in rows], [train.labels[i] for i in rows])
        device = next(model.parameters()).device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        started = time.perf_counter()
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
        out.loss.backward()
        if out.loss.is_cuda:  # kernels run asynchronously; the Trainer's step syncs via .item()
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        model.zero_grad(set_to_none=True)
    return times


def cold_encode_seconds(pipeline, train: MembershipSet, batches) -> list[float]:
    """Seconds to encode each batch the first time (the pipeline memoises per text)."""
    times = []
    for members, nonmembers in batches:
        rows = members + nonmembers
        started = time.perf_counter()
        pipeline.encode([train.texts[i] for i in rows], [train.labels[i] for i in rows])
        times.append(time.perf_counter() - started)
    return times


def measure(model_name: str, steps: int, batch_per_class: int) -> dict:
    loaded = load_model(ModelConfig(name=model_name))
    return measure_loaded(loaded, training_texts(steps * batch_per_class), batch_per_class)


def measure_loaded(loaded, train: MembershipSet, batch_per_class: int) -> dict:
    """Step against bare forward+backward for ``loaded`` on ``train`` (two epochs of it)."""
    config = TunerConfig(batch_per_class=batch_per_class, epochs=1)
    pipeline = make_pipeline(loaded, config)
    model = wrap_model(loaded.model, loaded.tokenizer, config)
    members = [i for i, y in enumerate(train.labels) if y == 1]
    nonmembers = [i for i, y in enumerate(train.labels) if y == 0]
    # the Trainer's two epochs draw exactly these batches (same seed, same rule, one generator)
    rng = np.random.default_rng(config.seed)
    first_batches = epoch_batches(members, nonmembers, batch_per_class, rng)
    batches = epoch_batches(members, nonmembers, batch_per_class, rng)  # epoch 2: the timed steps
    # the first encoding of each batch (tokenisation, chat template): paid in epoch 1 only
    encode_cold = cold_encode_seconds(pipeline, train, first_batches)
    # warm-up, untimed: every batch once (allocator, kernels for each shape), so the timed steps
    # measure steady state, as in epochs 2+ of a run
    bare_seconds(model, pipeline, train, first_batches + batches)
    bare = bare_seconds(model, pipeline, train, batches)
    trainer = Trainer(model, pipeline.loss, pipeline.encode,
                      TrainerConfig(learning_rate=config.learning_rate, epochs=2,
                                    batch_per_class=batch_per_class, seed=config.seed, desc="step"))
    history = trainer.fit(train)
    # epoch 1 carries one-off costs (optimizer state, allocator growth for the pipeline's own
    # tensors); epoch 2 is what the rest of a run costs per step
    first = [s["seconds"] for s in history.steps if s["epoch"] == 1][1:]
    step = [s["seconds"] for s in history.steps if s["epoch"] == 2]
    bare += bare_seconds(trainer.model, pipeline, train, batches)
    step_s, bare_s = statistics.median(step), statistics.median(bare)
    return {"model": loaded.name, "mode": pipeline.mode, "batch": 2 * batch_per_class,
            "step_s": round(step_s, 4), "bare_forward_backward_s": round(bare_s, 4),
            "ratio": round(step_s / bare_s, 3),
            "encode_cold_s": round(statistics.median(encode_cold), 4),
            "first_epoch_step_s": round(statistics.median(first), 4) if first else None,
            "steps_timed": len(step), "bare_timed": len(bare),
            "machine": machine(loaded.device),
            "date": time.strftime("%Y-%m-%d")}


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()}, {torch.get_num_threads()} torch threads"


def full_logits_loss(pipeline):
    """The base pipeline's loss computed from the full logits (what it did before chunking)."""
    from mia_tuner.training import losses
    from mia_tuner.tuner.peft_setup import forward_logits

    def loss(model, batch, sync=None):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        first = torch.ones(ids.shape[0], dtype=torch.long, device=ids.device)
        z = losses.weighted_lm_loss(forward_logits(model, ids, mask), ids, mask, first, 1.0)
        c = pipeline.config
        return losses.base_pipeline_loss(z, batch["is_member"], c.contrastive_weight, c.hinge_weight,
                                         c.temperature, c.distance_scale)
    return loss


def memory_child(model_name: str, variant: str, steps: int, batch_per_class: int,
                 chunk: int | None = None) -> dict:
    """In this (fresh) process: `steps` + 1 training steps of the base pipeline; peak RSS."""
    from mia_tuner.training import chunked

    chunked.CHUNK_POSITIONS = chunk or chunked.CHUNK_POSITIONS
    loaded = load_model(ModelConfig(name=model_name))
    train = training_texts((steps + 1) * batch_per_class, "WikiMIA_length128")
    config = TunerConfig(mode="base", batch_per_class=batch_per_class, epochs=1, share_prefix=False,
                         gradient_checkpointing=variant == "chunked+checkpointing")
    pipeline = make_pipeline(loaded, config)
    model = wrap_model(loaded.model, loaded.tokenizer, config)
    loss = full_logits_loss(pipeline) if variant == "full-logits" else pipeline.loss
    trainer = Trainer(model, loss, pipeline.encode,
                      TrainerConfig(learning_rate=config.learning_rate, epochs=1,
                                    batch_per_class=batch_per_class, seed=config.seed, desc=variant))
    history = trainer.fit(train)
    tokens = [len(pipeline.token_ids(t)) for t in train.texts]
    return {"model": loaded.name, "mode": "base", "variant": variant, "batch": 2 * batch_per_class,
            "chunk_positions": chunked.CHUNK_POSITIONS if variant != "full-logits" else None,
            "mean_text_tokens": round(float(np.mean(tokens)), 1),
            "step_s": round(statistics.median(s["seconds"] for s in history.steps[1:]), 4),
            "steps_timed": len(history.steps) - 1,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "total": [round(s["total"], 6) for s in history.steps],
            "machine": machine(loaded.device), "date": time.strftime("%Y-%m-%d")}


def memory_rows(models, steps: int, batch_per_class: int, variants, chunk: int | None) -> list[dict]:
    rows = []
    for name in models:
        for variant in variants:
            extra = ["--chunk", str(chunk)] if chunk else []
            out = subprocess.run([sys.executable, __file__, "--memory-child", variant, "--models", name,
                                  "--steps", str(steps), "--batch-per-class", str(batch_per_class), *extra],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=["smollm2-135m-instruct", "gemma-3-270m"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-per-class", type=int, default=8)
    parser.add_argument("--memory", action="store_true", help="peak memory, chunked vs full logits")
    parser.add_argument("--variants", nargs="*", default=VARIANTS[:2], choices=VARIANTS)
    parser.add_argument("--chunk", type=int, help="positions per chunk (default: the package's)")
    parser.add_argument("--memory-child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.models[0], args.memory_child, args.steps, args.batch_per_class,
                                      args.chunk)))
        return
    if args.memory:  # new rows replace those of the same model, variant and chunk size
        rows = memory_rows(args.models, args.steps, args.batch_per_class, args.variants, args.chunk)
        merge(rows, RESULTS, ("model", "variant", "chunk_positions"))
        return
    records = []
    for name in args.models:
        record = measure(name, args.steps, args.batch_per_class)
        print(json.dumps(record), flush=True)
        records.append(record)
    memory = [r for r in json.loads(RESULTS.read_text()) if "peak_rss_gb" in r] if RESULTS.exists() else []
    RESULTS.write_text(json.dumps(records + memory, indent=1) + "\n")
    refresh()


if __name__ == "__main__":
    main()
