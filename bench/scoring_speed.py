"""Speed of reference-free scoring (issue: one forward pass per text, batched).

Measures, in one process on the same 200 WikiMIA-24 texts and the offline SmolLM2:
  (a) ours: Loss, Zlib, Min-K%, Min-K%++ through the StatsProvider (cache off);
  (b) a bare batched forward pass of the same model over the same batches;
  (c) a per-text loop in the style of the reference implementations: one text at a time,
      each method its own forward pass.
Writes bench/results/scoring_speed.json and prints the ratios.

    .venv/bin/python bench/scoring_speed.py [--n-texts 200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from mia_tuner.config import MethodConfig
from mia_tuner.data import load_membership_set, make_split
from mia_tuner.config import DataConfig, SplitConfig
from mia_tuner.methods import ScoringContext, StatsProvider, build_methods
from mia_tuner.models.batching import pad_batch
from mia_tuner.models import load_model
from blocks import refresh

METHODS = ["loss", "zlib", "min-k%", "min-k%++"]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikimia24"
RESULTS = Path(__file__).resolve().parent / "results" / "scoring_speed.json"


def texts_for_bench(n: int) -> list[str]:
    data = load_membership_set(DataConfig(path=str(DATA), split="WikiMIA_length32"))
    split = make_split(data, SplitConfig(max_test_per_class=n // 2))
    return list(split.test.texts)[:n]


def ours(loaded, texts, batch_size):
    provider = StatsProvider(loaded, batch_size=batch_size, desc="ours")
    ctx = ScoringContext(target=provider, settings=MethodConfig(k=0.2))
    return {m.name: m.score(texts, ctx) for m in build_methods(METHODS, ctx.settings)}


@torch.inference_mode()
def bare_forward(loaded, texts, batch_size):
    """The same tokenisation, sorting and padding, then the model and nothing else."""
    ids = loaded.tokenizer(texts, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        batch = [ids[i] for i in order[start:start + batch_size]]
        input_ids, mask = pad_batch(batch, loaded.tokenizer.pad_token_id)
        loaded.model(input_ids=input_ids, attention_mask=mask).logits


@torch.inference_mode()
def per_text_loop(loaded, texts, k=0.2):
    """Reference-implementation style: each method runs its own forward pass per text."""
    model, tokenizer = loaded.model, loaded.tokenizer
    out = {m: [] for m in METHODS}

    def forward(text):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        return ids, model(input_ids=ids, labels=ids)

    for text in texts:
        _, result = forward(text)
        out["loss"].append(-result.loss.item())
        _, result = forward(text)
        out["zlib"].append(-result.loss.item() / len(zlib.compress(text.encode("utf-8"))))
        ids, result = forward(text)
        logp = torch.log_softmax(result.logits[0, :-1].float(), -1)
        token_logp = logp.gather(-1, ids[0, 1:, None]).squeeze(-1).numpy()
        n = max(1, math.floor(len(token_logp) * k))
        out["min-k%"].append(float(np.sort(token_logp)[:n].mean()))
        ids, result = forward(text)
        logp = torch.log_softmax(result.logits[0, :-1].float(), -1)
        probs = logp.exp()
        mu = (probs * logp).sum(-1)
        sigma = (probs * (logp - mu[:, None]) ** 2).sum(-1).sqrt()
        token_logp = logp.gather(-1, ids[0, 1:, None]).squeeze(-1)
        z = ((token_logp - mu) / sigma).numpy()
        out["min-k%++"].append(float(np.sort(z)[:n].mean()))
    return {m: np.array(v) for m, v in out.items()}


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n-texts", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model(args.model)
    texts = texts_for_bench(args.n_texts)
    bare_forward(loaded, texts[:16], args.batch_size)  # warm-up
    ours_times, bare_times = [], []
    for _ in range(args.repeats):  # interleaved, best of N: the machine is shared and noisy
        t, scores = timed(ours, loaded, texts, args.batch_size)
        ours_times.append(t)
        bare_times.append(timed(bare_forward, loaded, texts, args.batch_size)[0])
    loop_time, loop_scores = timed(per_text_loop, loaded, texts)
    diff = max(float(np.max(np.abs(scores[m] - loop_scores[m]))) for m in METHODS)
    record = {"model": args.model, "n_texts": len(texts), "ours_s": round(min(ours_times), 3),
              "bare_forward_s": round(min(bare_times), 3), "per_text_loop_s": round(loop_time, 3),
              "max_abs_score_diff": diff,
              "ours_over_bare": round(min(ours_times) / min(bare_times), 3),
              "loop_over_ours": round(loop_time / min(ours_times), 2),
              "all_ours_s": [round(t, 3) for t in ours_times],
              "all_bare_s": [round(t, 3) for t in bare_times],
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
              "date": time.strftime("%Y-%m-%d")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    refresh()
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
