"""The offline default: a controlled-membership run on the offline SmolLM2, no files needed.

First run: builds the controlled set (members injected by continued pre-training, ~6 min on
2 cores), scores it with every method but `neighbor` (~9 min), trains MIA-Tuner on the same
training texts as `fused` (~4 min) and caches all three; later runs reuse them. The demo is a
one-cell suite (``demo_suite``), run by the suite runner and written as a run directory
(``suite.single``).
"""

from __future__ import annotations

from dataclasses import asdict, replace

from .config import MethodConfig, ModelConfig, OutputFolders, SplitConfig
from .suite.config import DatasetEntry, SuiteConfig, TunerVariant
from .training.controlled import DEFAULT_TRAIN_FRACTION, ControlledConfig
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


def demo_suite(model: str = DEMO_MODEL, device: str = ModelConfig.device) -> SuiteConfig:
    """The demo as a one-cell suite: ``model``'s controlled set (the injected model as target,
    the model before injection as reference), its split recipe (DEMO_SPLIT), the demo's
    methods and MIA-Tuner's default variant trained for DEMO_TUNER's epochs."""
    methods = demo_run_methods()
    settings = {k: v for k, v in asdict(methods).items() if k not in ("methods", "reference")}
    tuner = {k: v for k, v in DEMO_TUNER.to_dict().items() if v != getattr(TunerConfig(), k)}
    return SuiteConfig(name="demo", models=[model], datasets=[DatasetEntry(set="controlled:{model}")],
                       methods=list(methods.methods), method_settings=settings,
                       tuner=[TunerVariant(settings=tuner)], device=device)


def demo_identity(model: str = DEMO_MODEL) -> dict:
    """What determines the demo's results (its run directory holds one such run)."""
    from .rundir import run_identity

    return run_identity(model=model, controlled=ControlledConfig().resolved(), split=DEMO_SPLIT,
                        methods=demo_run_methods(), tuner=DEMO_TUNER)


def run_demo(out: str = OutputFolders.demo, cache_dir: str | None = None, device: str = ModelConfig.device,
             model: str = DEMO_MODEL):
    """Run the demo into ``out`` (a one-cell suite: suite.single); a ``run.RunResult``."""
    from .suite.single import run_single_cell

    return run_single_cell(demo_suite(model, device), out, cache_dir=cache_dir)
