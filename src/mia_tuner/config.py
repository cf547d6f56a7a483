"""Typed configuration of a scoring run (MIMIR-style dataclasses, serialisable to JSON)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path


def default_cache_dir() -> Path:
    """Where fetched models, de-quantised copies, score caches and built sets live.

    Overridable with the MIA_TUNER_CACHE environment variable.
    """
    env = os.environ.get("MIA_TUNER_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "mia-tuner"


@dataclass
class ModelConfig:
    """Which model to load and how."""

    name: str = "smollm2-135m-instruct"
    device: str = "auto"  # cpu | cuda | auto
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device_map: str | None = None  # "auto" spreads a large model over several devices
    quantization: str | None = None  # None | "8bit" | "4bit" (bitsandbytes)
    gguf_file: str | None = None  # a GGUF file inside a local directory or hub repo
    # run custom model code shipped with a model folder or hub repo; never without the user's
    # explicit --trust-remote-code (a detector or suite file cannot turn it on)
    trust_remote_code: bool = False


@dataclass
class DataConfig:
    """Where a member/non-member set comes from."""

    path: str = ""
    split: str | None = None
    text_column: str = "input"
    label_column: str = "label"
    skip_invalid: bool = False
    dedupe: bool = True


@dataclass
class SplitConfig:
    """The evaluation split shared by every method (train part for learned detectors)."""

    seed: int = 42
    train_fraction: float = 0.8
    max_train_per_class: int = 80
    max_test_per_class: int = 100
    # when a class holds enough texts for both caps, cut it so that the test part is full
    # (train_fraction only decides smaller sets); False: always cut at train_fraction, as the
    # official MIA-Tuner code does (WikiMIA-24 length 128: 58 + 58 test texts)
    fill_test_first: bool = True
    # "event": texts about the same event (data.shift.event_key) stay on one side of the split,
    # so a paired set's member and non-member twins are never split between train and test
    group_by: str | None = None


@dataclass
class MethodConfig:
    """Settings of the score-based methods."""

    methods: list[str] = field(default_factory=lambda: ["all"])
    k: float = 0.2  # Min-K% and Min-K%++
    k_sweep: list[float] = field(default_factory=list)  # extra k values, reported separately
    num_neighbors: int = 5
    neighbor_fraction: float = 0.15  # share of words replaced in each neighbour
    neighbors_file: str | None = None
    perturbation_model: str | None = None  # a masked LM; None = word replacement by the target
    reference: str | None = None  # reference model for `ref`
    batch_size: int = 8
    max_tokens: int | None = None  # truncate longer texts (default: the model's context)
    recall_shots: int = 10  # ReCaLL / Con-ReCall: training texts per class in the prefix
    con_recall_gamma: float = 0.5  # Con-ReCall: weight of the member-prefix likelihood
    fused_k: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.5])  # Min-K(++) k's `fused` reads
    # the score-based methods `fused` reads (empty: every fusable one; Ref only in `fused+ref`)
    fused_features: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    """Everything a `mia-tuner scores` run needs; written to the run directory as JSON."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    methods: MethodConfig = field(default_factory=MethodConfig)
    out: str = "runs/latest"
    cache_dir: str = field(default_factory=lambda: str(default_cache_dir()))
    use_cache: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
