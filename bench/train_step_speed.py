"""Cost of one MIA-Tuner training step against a bare forward+backward (issue: MIA-Tuner).

In one process, on the same batches (B members + B non-members of WikiMIA-24 length 32) and
the same peft-wrapped model with the same soft prompt:
  * step: what `Trainer` times per step (encoding, the pipeline's loss, backward, AdamW and
    the schedule), read from its history;
  * bare: `model(input_ids, attention_mask, labels=...)` with transformers' own next-token loss,
    then `.backward()` — no pipeline, no optimiser.
The bare pass is timed before and after the Trainer (median of both rounds) so drift on this
shared machine hits both sides. Writes bench/results/train_step_speed.json (one record per model).

    .venv/bin/python bench/train_step_speed.py [--models smollm2-135m-instruct gemma-3-270m] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikimia24"
RESULTS = Path(__file__).resolve().parent / "results" / "train_step_speed.json"


def training_texts(n_per_class: int) -> MembershipSet:
    data = load_membership_set(DataConfig(path=str(DATA), split="WikiMIA_length32"))
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
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        started = time.perf_counter()
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
        out.loss.backward()
        times.append(time.perf_counter() - started)
        model.zero_grad(set_to_none=True)
    return times


def measure(model_name: str, steps: int, batch_per_class: int) -> dict:
    loaded = load_model(ModelConfig(name=model_name))
    config = TunerConfig(batch_per_class=batch_per_class, epochs=1)
    pipeline = make_pipeline(loaded, config)
    model = wrap_model(loaded.model, loaded.tokenizer, config)
    train = training_texts(steps * batch_per_class)
    members = [i for i, y in enumerate(train.labels) if y == 1]
    nonmembers = [i for i, y in enumerate(train.labels) if y == 0]
    # the Trainer's first epoch draws exactly these batches (same seed, same rule)
    batches = epoch_batches(members, nonmembers, batch_per_class, np.random.default_rng(config.seed))
    bare_seconds(model, pipeline, train, batches[:1])  # warm-up (allocator, encode memo)
    bare = bare_seconds(model, pipeline, train, batches)
    trainer = Trainer(model, pipeline.loss, pipeline.encode,
                      TrainerConfig(learning_rate=config.learning_rate, epochs=1,
                                    batch_per_class=batch_per_class, seed=config.seed, desc="step"))
    history = trainer.fit(train)
    step = [s["seconds"] for s in history.steps][1:]  # the first step carries one-off set-up
    bare += bare_seconds(trainer.model, pipeline, train, batches)
    step_s, bare_s = statistics.median(step), statistics.median(bare)
    return {"model": model_name, "mode": pipeline.mode, "batch": 2 * batch_per_class,
            "step_s": round(step_s, 4), "bare_forward_backward_s": round(bare_s, 4),
            "ratio": round(step_s / bare_s, 3), "steps_timed": len(step), "bare_timed": len(bare),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
            "date": time.strftime("%Y-%m-%d")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=["smollm2-135m-instruct", "gemma-3-270m"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-per-class", type=int, default=8)
    args = parser.parse_args()
    records = []
    for name in args.models:
        record = measure(name, args.steps, args.batch_per_class)
        print(json.dumps(record), flush=True)
        records.append(record)
    RESULTS.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
