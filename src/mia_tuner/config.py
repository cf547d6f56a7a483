"""Typed configuration of a scoring run (MIMIR-style dataclasses, serialisable to JSON)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import ClassVar
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


DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATIONS = ("8bit", "4bit")


def option(default=dataclasses.MISSING, help_text: str = "", *, factory=None):
    """A field with its command-line help: ``mia_tuner.cli.fields`` generates the option from
    the field (name, type, default, help), so a default is written once, here."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})



def same_as(cls, name: str, *, as_list: bool = False, help_text: str | None = None):
    """A field that stands for ``cls``'s field ``name`` in another configuration (a suite's
    model or split settings): its default and help read from there, never written again
    (``as_list``: a list holding that default, for an axis of several values)."""
    source = cls.__dataclass_fields__[name]
    help_text = help_text or source.metadata.get("help", "")
    if as_list:
        return field(default_factory=lambda: [source.default], metadata={"help": help_text})
    return field(default=source.default, metadata={"help": help_text})

# the seed of every random choice a run makes unless told otherwise (split, training order,
# initialisation, the controlled set's draw): one value, so that the entry points agree
DEFAULT_SEED = 42

@dataclass
class ModelConfig:
    """Which model to load and how."""

    # the values a field accepts (the command line refuses others while parsing)
    CHOICES: ClassVar[dict] = {"device": DEVICES, "dtype": DTYPES, "quantization": QUANTIZATIONS}

    name: str = option("smollm2-135m-instruct", "offline short name, local directory, .gguf file or hub id")
    device: str = option("auto", "cpu | cuda | auto")
    dtype: str = option("float32", "weights' precision")
    device_map: str | None = option(None, '"auto" to spread a large model over several devices')
    quantization: str | None = option(None, "bitsandbytes loading (pip install -e .[quantization])")
    gguf_file: str | None = option(None, "GGUF file name inside --model (directory or hub repo)")
    # never without the user's explicit --trust-remote-code (a detector or suite file cannot turn it on)
    trust_remote_code: bool = option(False, "run custom model code shipped with the model (off unless given here)")


@dataclass
class DataConfig:
    """Where a member/non-member set comes from."""

    path: str = option("", "save_to_disk folder, .jsonl/.json/.csv/.parquet file, hub name or set name")
    split: str | None = option(None, "split name, e.g. WikiMIA_length32")
    text_column: str = option("input", "column holding the texts")
    label_column: str = option("label", "column holding the labels (1 member, 0 non-member)")
    skip_invalid: bool = option(False, "skip (and count) rows with bad labels or empty texts")
    dedupe: bool = option(True, "drop exact duplicate texts (--no-dedupe keeps them)")


@dataclass
class SplitConfig:
    """The evaluation split shared by every method (train part for learned detectors)."""

    VALUES: ClassVar[dict] = {"seed": "seed", "train_fraction": "fraction", "max_train_per_class": "positive",
                              "max_test_per_class": "positive"}  # kinds of value (cli.fields.value_types)
    CHOICES: ClassVar[dict] = {"group_by": ("event",)}

    seed: int = option(DEFAULT_SEED, "seed of the evaluation split")
    train_fraction: float = option(0.8, "share of each class on the train side of the cut")
    max_train_per_class: int = option(80, "training texts per class (learned detectors, ReCaLL shots)")
    max_test_per_class: int = option(100, "held-out test texts per class")
    # a large class is cut so that the test part is full (train_fraction only decides smaller
    # sets); False: always cut at train_fraction, as the official MIA-Tuner code does
    # (WikiMIA-24 length 128: 58 + 58 test texts)
    fill_test_first: bool = option(True, "fill the test part first when a class is large enough "
                                         "(--paper-split: always cut at --train-fraction, as the official code)")
    # "event": texts about the same event (data.shift.event_key) stay on one side of the split,
    # so a paired set's member and non-member twins are never split between train and test
    group_by: str | None = option(None, "keep texts of the same event on one side (paired sets)")


@dataclass
class MethodConfig:
    """Settings of the score-based methods."""

    VALUES: ClassVar[dict] = {"k": "share", "k_sweep": "shares", "num_neighbors": "positive",
                              "neighbor_fraction": "share", "recall_shots": "positive", "batch_size": "positive",
                              "max_tokens": "tokens", "fused_k": "shares"}

    methods: list[str] = option(help_text="comma-separated method names, or all", factory=lambda: ["all"])
    k: float = option(0.2, "Min-K% / Min-K%++ share of tokens")
    k_sweep: list[float] = option(help_text="extra k values, reported separately, e.g. 0.1,0.3,0.5", factory=list)
    num_neighbors: int = option(5, "neighbours per text (`neighbor`)")
    neighbor_fraction: float = option(0.15, "share of words replaced in each neighbour")
    neighbors_file: str | None = option(None, "JSONL {text, neighbors} for `neighbor`")
    perturbation_model: str | None = option(None, "masked LM generating neighbours; none: word replacement by the target")
    reference: str | None = option(None, "reference model for `ref`")
    batch_size: int = option(8, "texts per forward pass")
    max_tokens: int | None = option(None, "truncate longer texts, with a warning; none: at the model's context")
    recall_shots: int = option(10, "ReCaLL / Con-ReCall: training texts per class in the prefix")
    con_recall_gamma: float = option(0.5, "Con-ReCall: weight of the member-prefix likelihood")
    fused_k: list[float] = option(help_text="Min-K% / Min-K%++ k values `fused` reads", factory=lambda: [0.1, 0.2, 0.5])
    fused_features: list[str] = option(help_text="score-based methods `fused` reads; empty: every fusable one "
                                                 "(Ref only in `fused+ref`)", factory=list)
    adapt_reference: bool = option(False, "also score every reference method on the reference fine-tuned on "
                                          "the training part's non-members (rows `<method>:adapted`)")
    # On SmolLM2's controlled set every fine-tuning did best on validation after its first epoch
    # and worse after each later one (docs/history.md): the grid reaches below one epoch at 1e-4
    # (3e-5), and a third epoch, never chosen there, is left to --adapt-epochs 3.
    adapt_grid: list[str] = option(help_text="fine-tunings tried for the adapted reference and FSD, as "
                                             "full:<lr> or lora:<lr>; the best on validation is kept",
                                   factory=lambda: ["full:3e-5", "full:1e-4", "lora:1e-3"])
    adapt_epochs: int = option(2, "epochs of each fine-tuning; every epoch is a candidate")
    adapt_validation_per_class: int = option(20, "training texts per class held out to choose the fine-tuning "
                                                 "(the rest of the non-members are trained on)")

    def __post_init__(self) -> None:
        from .errors import MethodError

        if not self.methods:
            raise MethodError("--methods names no method; give names such as loss,zlib or all")
        for name in ("k", "neighbor_fraction", "con_recall_gamma"):
            if not math.isfinite(float(getattr(self, name))):
                raise MethodError(f"{name} (--{name.replace('_', '-')}) must be a finite number, "
                                  f"got {getattr(self, name)}")
        for entry in self.adapt_grid:
            parse_fine_tuning(entry)
        if not self.adapt_grid:
            raise MethodError("adapt_grid (--adapt-grid) names no fine-tuning; give e.g. full:1e-4")
        if self.adapt_epochs < 1 or self.adapt_validation_per_class < 0:
            raise MethodError("adapt_epochs must be >= 1 and adapt_validation_per_class >= 0")


# Settings of the models fine-tuned on non-members (the adapted reference, FSD's target): they
# change only the methods that read those models, so record keys leave them out elsewhere.
FINE_TUNING_FIELDS = ("adapt_reference", "adapt_grid", "adapt_epochs", "adapt_validation_per_class")


def method_settings(config: MethodConfig, fine_tuned: bool) -> dict:
    """The fields of ``config`` (a dict), without FINE_TUNING_FIELDS unless ``fine_tuned`` or
    one of them is changed from its default."""
    values = dataclasses.asdict(config)
    defaults = dataclasses.asdict(MethodConfig())
    if fine_tuned or any(values[f] != defaults[f] for f in FINE_TUNING_FIELDS):
        return values
    return {k: v for k, v in values.items() if k not in FINE_TUNING_FIELDS}


FINE_TUNING_KINDS = ("full", "lora")


def parse_fine_tuning(entry: str) -> tuple[str, float]:
    """``"full:1e-4"`` -> ("full", 1e-4): a fine-tuning of the grid of --adapt-grid."""
    from .errors import MethodError

    kind, _, rate = str(entry).partition(":")
    try:
        learning_rate = float(rate)
    except ValueError:
        learning_rate = float("nan")
    if kind not in FINE_TUNING_KINDS or not (math.isfinite(learning_rate) and learning_rate > 0):
        raise MethodError(f"--adapt-grid entry {entry!r} must be full:<lr> or lora:<lr> with a positive "
                          "learning rate, e.g. full:1e-4")
    return kind, learning_rate


@dataclass
class OutputFolders:
    """The run directory of each command that trains or runs the demo, unless --out names
    another (`scores`: RunConfig.out)."""

    train: str = option("runs/mia-tuner", "the run directory (the detector in its detector/, the training "
                                          "checkpoint in checkpoint/)")
    defend: str = option("runs/defence", "the run directory (the defence in its defence/, report.json, report.md)")
    demo: str = option("runs/demo", "the run directory")


@dataclass
class RunConfig:
    """Everything a `mia-tuner scores` run needs; written to the run directory as JSON."""

    model: ModelConfig = option(help_text="the target model", factory=ModelConfig)
    data: DataConfig = option(help_text="the labelled texts", factory=DataConfig)
    split: SplitConfig = option(help_text="the evaluation split", factory=SplitConfig)
    methods: MethodConfig = option(help_text="the methods and their settings", factory=MethodConfig)
    out: str = option("runs/latest", "the run directory")
    cache_dir: str = option(help_text="models, built sets and score cache (env MIA_TUNER_CACHE)",
                            factory=lambda: str(default_cache_dir()))
    use_cache: bool = option(True, "read and write the score cache")

    @classmethod
    def compose(cls, model: ModelConfig, *, methods: MethodConfig | None = None, reference: str | None = None,
                split: SplitConfig | None = None, data: DataConfig | None = None, out: str | None = None,
                cache_dir=None, use_cache: bool = True) -> "RunConfig":
        """The one place a run's configuration is put together, whatever the entry point (the
        CLI, the suite runner, MIA-Tuner's baselines, a defence's attacks, the demo): parts not
        given take their dataclass defaults; ``reference``, where given, is the methods'."""
        methods = methods or MethodConfig()
        if reference:
            methods = dataclasses.replace(methods, reference=reference)
        return cls(model=model, data=data or DataConfig(), split=split or SplitConfig(), methods=methods,
                   out=cls.out if out is None else str(out),
                   cache_dir=str(cache_dir) if cache_dir else str(default_cache_dir()), use_cache=use_cache)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
