"""The offline default: a controlled-membership run on the offline SmolLM2, no files needed.

First run: builds the controlled set (members injected by continued pre-training, ~6 min on
2 cores), scores it with every method but `neighbor` (~9 min), trains MIA-Tuner on the same
training texts as `fused` (~4 min) and caches all three; later runs reuse them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import (DataConfig, MethodConfig, ModelConfig, RunConfig, SplitConfig,
                     default_cache_dir)
from .data.types import text_hash
from .integrity import content_sha256, file_sha256
from .training.controlled import DATA_FILE, DEFAULT_TRAIN_FRACTION, MODEL_DIR, ControlledConfig, ensure_controlled
from .tuner.config import TunerConfig

DEMO_MODEL = "smollm2-135m-instruct"
# the controlled set's recipe (mia_tuner.training.controlled): of 250 texts per class, 150 on
# the train side (80 used, the rest for validation later), 100 + 100 held out
DEMO_SPLIT = SplitConfig(train_fraction=DEFAULT_TRAIN_FRACTION)
# `neighbor` costs five forward passes a text (half the demo's scoring time) and `fsd` a
# fine-tuning of the target (two minutes); both are weak on these sets (Neighbor at chance, FSD
# below Min-K%++: BENCHMARKS.md, docs/history.md). `mia-tuner scores --methods all` on the demo's data.jsonl
# adds them.
DEMO_LEFT_OUT = ("neighbor", "fsd")
# MIA-Tuner's default variant, 2 epochs instead of 5 to keep the first run near 20 minutes
# (on the controlled sets its validation AUROC does not rise after the first epochs;
# docs/history.md, "Detectors that use labelled texts").
DEMO_TUNER = TunerConfig(epochs=2)


# The adapted reference: the fine-tuning validation chose on both offline models' 600 + 600
# controlled sets among full:3e-5, full:1e-4 and lora:1e-3 (docs/history.md), its epoch (1-2)
# chosen on 20 + 20 validation texts; each more entry of the grid costs the first run 2 minutes.
DEMO_ADAPT_GRID = ["full:1e-4"]
DEMO_ADAPT_EPOCHS = 2


def demo_methods(left_out=()) -> MethodConfig:
    """Every method and every `fused` feature except ``left_out``."""
    from .methods.base import METHODS

    names = [name for name in METHODS if name not in left_out]
    fusable = [name for name in names if METHODS[name].fusable]
    return MethodConfig(methods=names, fused_features=fusable if left_out else [])


def demo_run_methods() -> MethodConfig:
    """The demo's methods: every one but DEMO_LEFT_OUT, and the reference adapted to the set's
    domain on its labelled non-members (rows ``<method>:adapted``)."""
    return replace(demo_methods(DEMO_LEFT_OUT), adapt_reference=True, adapt_grid=list(DEMO_ADAPT_GRID),
                   adapt_epochs=DEMO_ADAPT_EPOCHS)


def demo_config(set_dir: Path, model: str, out: str, cache_dir: str, device: str,
                methods: MethodConfig | None = None) -> RunConfig:
    """Score the injected model with ``methods`` (default: all); `ref` uses the model before
    injection."""
    return RunConfig.compose(ModelConfig(name=str(set_dir / MODEL_DIR), device=device),
                             data=DataConfig(path=str(set_dir / DATA_FILE)), split=DEMO_SPLIT,
                             methods=methods or MethodConfig(methods=["all"]), reference=model,
                             out=out, cache_dir=cache_dir)


def detector_dir(set_dir: Path, config: RunConfig, tuner: TunerConfig) -> Path:
    """Cache folder of the demo's MIA-Tuner run, keyed by the set and every setting."""
    key = content_sha256({"set": set_dir.name, "split": config.split.__dict__, "tuner": tuner.to_dict()})
    return Path(config.cache_dir) / "detectors" / f"{set_dir.name}-{key[:12]}"


def tuner_scores(loaded, data, split, config: RunConfig, folder: Path, tuner: TunerConfig) -> tuple[dict, dict]:
    """MIA-Tuner's scores of the test texts and its validation AUROC: trained on the split's
    training part the first time (resumable, checkpointed in ``folder``), then read from the
    score cache under the hash of the saved detector (whose files are checked against the
    hashes it records)."""
    from .run import open_cache
    from .tuner.api import ROW, train_detector
    from .tuner.detector import DETECTOR_FILE, read_detector_info, verify_detector_files

    texts = list(split.test.texts)
    saved = folder / "detector"
    cache = open_cache(config)
    try:
        if (saved / DETECTOR_FILE).is_file():
            info = read_detector_info(saved)
            verify_detector_files(saved, info)
            found = cache.get(loaded.fingerprint, ROW, {"detector": file_sha256(saved / DETECTOR_FILE)}, texts)
            hashes = [text_hash(t) for t in texts]
            if all(h in found for h in hashes):
                return {ROW: np.array([found[h] for h in hashes])}, _validation(info)
        print(f"Training MIA-Tuner on the demo set's training part in {folder} (first run only) ...")
        result = train_detector(loaded, data, tuner, out_dir=folder, split_config=config.split,
                                compare_methods=False, cache_dir=config.cache_dir,
                                model_config=config.model)
        if list(result.split.test.texts) != texts:
            raise RuntimeError("MIA-Tuner's evaluation split differs from the demo's")
        cache.put(loaded.fingerprint, ROW, {"detector": file_sha256(saved / DETECTOR_FILE)}, texts,
                  result.scores[ROW])
        return {ROW: result.scores[ROW]}, _validation(read_detector_info(saved))
    finally:
        cache.close()


def _validation(info: dict) -> dict:
    """MIA-Tuner's validation AUROC (of the epoch it kept), from its detector.json."""
    from .tuner.api import ROW

    auroc = (info.get("metrics") or {}).get("validation", {}).get("auroc")
    return {} if auroc is None else {ROW: auroc}


def demo_identity(model: str = DEMO_MODEL) -> dict:
    """What determines the demo's results (its run directory holds one such run)."""
    from .rundir import run_identity

    return run_identity(model=model, controlled=ControlledConfig().resolved(), split=DEMO_SPLIT,
                        methods=demo_run_methods(), tuner=DEMO_TUNER)


def run_demo(out: str = "runs/demo", cache_dir: str | None = None, device: str = "auto",
             model: str = DEMO_MODEL):
    from .data import load_membership_set
    from .models import load_model
    from .run import run_scores

    cache_dir = str(cache_dir or default_cache_dir())
    set_dir = ensure_controlled(model, ControlledConfig(), cache_dir, device)
    config = demo_config(set_dir, model, out, cache_dir, device, demo_run_methods())
    data = load_membership_set(config.data)
    loaded = load_model(config.model, cache_dir=cache_dir)
    folder = detector_dir(set_dir, config, DEMO_TUNER)
    return run_scores(config, data=data, loaded=loaded,
                      learned=lambda split: tuner_scores(loaded, data, split, config, folder, DEMO_TUNER))
