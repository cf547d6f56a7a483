"""MIA-Tuner on a CUDA device (issue: MIA-Tuner, "training runs under accelerate unchanged").

Run on a machine with a GPU; prints one JSON line per check and writes them to
``--out`` (default bench/results/gpu_check.json). It needs neither the shared data nor the
model weights, so it runs on a bare GPU machine with only the repository and, for part 2,
a folder of model *configs and tokenizers* (``--shapes DIR``: one sub-folder per model with
config.json and tokenizer files, e.g. copied from ~/.cache/mia-tuner/models/<name>/hf).

1. Same detector on CPU and CUDA: the tiny random models of the tests, both pipelines,
   trained for 2 epochs under ``Accelerator(cpu=True)`` and under ``Accelerator()`` on the GPU
   (fp32, TF32 off); reports the largest difference of the adapter weights and the scores.
2. bf16 mixed precision (``Accelerator(mixed_precision="bf16")``) trains and scores.
3. Training-step cost against a bare forward+backward (bench/train_step_speed.py's
   measurement) on randomly initialised models of the offline models' shapes, with their real
   tokenizers and chat templates (speed does not depend on the weights' values).

    python bench/gpu_check.py --shapes .gpu/shapes --texts .gpu/texts.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_tuner import small_config, tiny_loaded, toy_set  # noqa: E402  (the tests' tiny models)
from train_step_speed import measure_loaded  # noqa: E402

from mia_tuner.config import DataConfig  # noqa: E402
from mia_tuner.data import load_membership_set  # noqa: E402
from mia_tuner.models.loading import LoadedModel, load_tokenizer, weights_fingerprint  # noqa: E402
from mia_tuner.tuner.api import train_detector  # noqa: E402
from mia_tuner.training.params import trainable_state  # noqa: E402


def train_on(device: str, chat: bool, out: Path, mixed_precision: str = "no"):
    loaded = tiny_loaded(chat)
    loaded.model.to(device)
    # accelerate keeps one process-wide state; forget it so each run picks its own device/precision
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision)
    result = train_detector(loaded, toy_set(), small_config(epochs=2, batch_per_class=4),
                            out_dir=out, accelerator=accelerator)
    state = {k: v.detach().float().cpu() for k, v in trainable_state(result.detector.model).items()}
    return state, np.asarray(result.scores["mia-tuner"], dtype=float), result


def same_detector_check(tmp: Path) -> list[dict]:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    records = []
    for chat in (True, False):
        cpu_state, cpu_scores, _ = train_on("cpu", chat, tmp / f"cpu-{chat}")
        gpu_state, gpu_scores, result = train_on("cuda", chat, tmp / f"cuda-{chat}")
        weight_diff = max((cpu_state[k] - gpu_state[k]).abs().max().item() for k in cpu_state)
        records.append({"check": "cpu-vs-cuda", "mode": result.detector.pipeline.mode,
                        "max_adapter_diff": weight_diff,
                        "max_score_diff": float(np.abs(cpu_scores - gpu_scores).max()),
                        "same_keys": cpu_state.keys() == gpu_state.keys()})
    return records


def mixed_precision_check(tmp: Path) -> list[dict]:
    records = []
    for chat in (True, False):
        _, scores, result = train_on("cuda", chat, tmp / f"bf16-{chat}", mixed_precision="bf16")
        losses = [s["total"] for s in result.history.steps if "total" in s]
        records.append({"check": "bf16", "mode": result.detector.pipeline.mode,
                        "scores_finite": bool(np.isfinite(scores).all()),
                        "first_loss": losses[0] if losses else None,
                        "last_loss": losses[-1] if losses else None})
    return records


def random_like(shape_dir: Path, device: str = "cuda") -> LoadedModel:
    """A randomly initialised model with ``shape_dir``'s config and its real tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(shape_dir)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(device).eval()
    tokenizer = load_tokenizer(str(shape_dir), fast_path=True)  # as load_model reads the offline copies
    kind = "aligned" if getattr(tokenizer, "chat_template", None) else "base"
    return LoadedModel(model, tokenizer, f"{shape_dir.name} (random weights)",
                       weights_fingerprint(model), kind)


def step_speed_check(shapes: Path, texts: Path, batch_per_class: int, device: str = "cuda") -> list[dict]:
    train = load_membership_set(DataConfig(path=str(texts)))  # columns input, label
    records = []
    for shape_dir in sorted(p for p in shapes.iterdir() if p.is_dir()):
        record = measure_loaded(random_like(shape_dir, device), train, batch_per_class)
        records.append({"check": "train-step-speed", **record})
    return records


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", type=Path, help="folder of <model>/{config.json,tokenizer*}")
    parser.add_argument("--texts", type=Path, help="JSONL (input, label) for the speed check")
    parser.add_argument("--batch-per-class", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    records = [{"check": "device", "name": torch.cuda.get_device_name(0), "torch": torch.__version__}]
    print(json.dumps(records[0]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for check in (same_detector_check, mixed_precision_check):
            for record in check(Path(tmp)):
                print(json.dumps(record), flush=True)
                records.append(record)
    if args.shapes and args.texts:
        for record in step_speed_check(args.shapes, args.texts, args.batch_per_class):
            print(json.dumps(record), flush=True)
            records.append(record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=1) + "\n")
    # run on a lent machine: copy the record to bench/results/ here, then render BENCHMARKS.md
    # again with `python bench/check_generated.py --write`


if __name__ == "__main__":
    main()
