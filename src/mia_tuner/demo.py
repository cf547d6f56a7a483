"""The offline default: a controlled-membership run on the offline SmolLM2, no files needed.

First run: fetches the model, builds the controlled set (members injected by continued
pre-training, ~5 min on 2 cores) and caches it; later runs reuse it and the score cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .config import (DataConfig, MethodConfig, ModelConfig, RunConfig, SplitConfig,
                     default_cache_dir)
from .data.controlled import (DATA_FILE, MODEL_DIR, ControlledConfig, build_controlled, check_built,
                              is_built)

DEMO_MODEL = "smollm2-135m-instruct"
# 250 texts per class: 60% (150) form the train part (80 used, the rest for validation later),
# 40% (100) the test part, so the demo is scored on 100 + 100 held-out texts.
DEMO_SPLIT = SplitConfig(train_fraction=0.6)


def controlled_dir(model: str, config: ControlledConfig, cache_dir: str | Path) -> Path:
    """Cache folder of a controlled set, keyed by the model and every build setting."""
    key = hashlib.sha256(json.dumps([model, config.resolved()], sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / "controlled" / f"{model.replace('/', '_')}-{key[:12]}"


def ensure_controlled(model: str, config: ControlledConfig, cache_dir: str | Path,
                      device: str = "auto") -> Path:
    out = controlled_dir(model, config, cache_dir)
    if not is_built(out):
        print(f"Building the controlled-membership set in {out} (first run only) ...")
        build_controlled(model, out, config, device=device, cache_dir=cache_dir)
    check_built(out)
    return out


def demo_config(set_dir: Path, model: str, out: str, cache_dir: str, device: str) -> RunConfig:
    """Score the injected model with every method; `ref` uses the model before injection."""
    return RunConfig(
        model=ModelConfig(name=str(set_dir / MODEL_DIR), device=device),
        data=DataConfig(path=str(set_dir / DATA_FILE)),
        split=DEMO_SPLIT,
        methods=MethodConfig(methods=["all"], reference=model),
        out=out, cache_dir=str(cache_dir))


def run_demo(out: str = "runs/demo", cache_dir: str | None = None, device: str = "auto",
             model: str = DEMO_MODEL):
    from .run import run_scores

    cache_dir = str(cache_dir or default_cache_dir())
    set_dir = ensure_controlled(model, ControlledConfig(), cache_dir, device)
    return run_scores(demo_config(set_dir, model, out, cache_dir, device))
