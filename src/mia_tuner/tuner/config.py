"""MIA-Tuner's settings: pipeline, adapter, optimisation, loss weights and data sizes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mia_tuner.errors import MethodError
from mia_tuner.tuner import prompts

MODES = ("auto", "aligned", "base")
PEFT_KINDS = ("prompt", "lora", "prefix", "ia3")
BASE_SCORES = ("raw", "calibrated")

# Optimisation presets (learning rate, epochs, B = members = non-members per batch).
PRESETS: dict[str, dict] = {
    # The official experiments: AdamW 5e-4, linear decay, 50 epochs, 8 + 8 per batch.
    "paper": dict(learning_rate=5e-4, epochs=50, batch_per_class=8),
    # Measured on the offline SmolLM2, WikiMIA-24 length 32 (BENCHMARKS.md, "MIA-Tuner"): at
    # lr 1e-2 with the hybrid loss, test AUROC climbs 0.67, 0.73, 0.78, 0.80, 0.81 over
    # epochs 1-5 (validation picks epoch 5); an earlier probe at the paper's 5e-4 (plain
    # Yes/No cross-entropy) stayed at 0.43-0.47 for 6 epochs. Five epochs is what fits the 20-minute budget
    # of a CPU run; the curve is still rising, so GPU users should raise `epochs`.
    "default": dict(learning_rate=1e-2, epochs=5, batch_per_class=8),
}


_FLAGS = {"learning_rate": "--lr"}  # fields whose option on the command line has another name


def _named(field: str) -> str:
    """A field as a user meets it: ``learning_rate (--lr)``."""
    return f"{field} ({_FLAGS.get(field, '--' + field.replace('_', '-'))})"


@dataclass
class TunerConfig:
    """Everything that defines one MIA-Tuner training run (serialisable to JSON).

    The dataclass defaults are the ``"default"`` preset; ``from_preset`` picks another.
    """

    mode: str = "auto"  # auto (aligned iff the tokenizer has a chat template) | aligned | base
    peft: str = "prompt"  # prompt | lora | prefix | ia3
    num_virtual_tokens: int = 50  # soft prompt / prefix length
    # run the soft prompt and the tokens every text of a batch shares (a chat template's
    # opening) once per batch instead of once per text (same numbers, less compute)
    share_prefix: bool = True
    # recompute each decoder layer's activations in the backward instead of keeping them: less
    # memory for a second forward pass's time (the shared prefix is then not shared: a cache
    # cannot be kept under checkpointing)
    gradient_checkpointing: bool = False
    init_text: str = prompts.INIT_TEXT  # the soft prompt starts as this text's embeddings
    lora_rank: int = 8
    learning_rate: float = PRESETS["default"]["learning_rate"]
    epochs: int = PRESETS["default"]["epochs"]
    batch_per_class: int = PRESETS["default"]["batch_per_class"]
    grad_accum: int = 1
    seed: int = 42
    weight_decay: float = 0.0
    # pipeline A (aligned) loss weights
    lm_weight: float = 1.0
    classification_weight: float = 1.0
    error_weight: float = 1.0
    pre_answer_weight: float = 0.01
    # pipeline B (base) loss weights and similarity settings
    contrastive_weight: float = 1.0
    hinge_weight: float = 1.0
    temperature: float = 1.0
    distance_scale: float = 10.0
    # raw: ℓ(x) under the prompt (the paper); calibrated: ℓ(x) under the prompt minus ℓ(x)
    # without it, so each text's own difficulty cancels (a learned ReCaLL)
    base_score: str = "raw"
    # prompt format (pipeline A)
    system_prompt: str | None = None
    long_answer: bool = False  # the paper figure's answer sentence instead of Yes/No
    full_vocab_classification: bool = False  # paper-figure variant: CE over the whole vocabulary
    chat_template: str | None = None  # fallback template name for tokenizers without one
    # data
    train_per_class: int = 80
    validation_per_class: int = 10
    target_fpr: float = 0.01  # the detector's threshold keeps validation FPR at or below this
    max_tokens: int = 256  # texts are truncated to this many tokens
    batch_size: int = 8  # scoring batch size (inference only)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise MethodError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.base_score not in BASE_SCORES:
            raise MethodError(f"unknown base_score {self.base_score!r}; choose one of {', '.join(BASE_SCORES)}")
        if self.peft not in PEFT_KINDS:
            raise MethodError(f"unknown peft {self.peft!r}; choose one of {', '.join(PEFT_KINDS)}")
        for name in ("num_virtual_tokens", "epochs", "batch_per_class", "grad_accum",
                     "max_tokens", "batch_size", "train_per_class"):
            if getattr(self, name) < 1:
                raise MethodError(f"{_named(name)} must be >= 1, got {getattr(self, name)}")
        if self.validation_per_class < 0:
            raise MethodError(f"{_named('validation_per_class')} must be >= 0, got {self.validation_per_class}")
        if not 0.0 <= self.target_fpr <= 1.0:
            raise MethodError(f"target_fpr must be in [0, 1], got {self.target_fpr}")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise MethodError(f"{_named('learning_rate')} must be > 0, got {self.learning_rate}")

    @classmethod
    def from_preset(cls, name: str = "default", **overrides) -> "TunerConfig":
        """The preset's optimisation settings, then ``overrides`` (None values are ignored)."""
        if name not in PRESETS:
            raise MethodError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict) -> "TunerConfig":
        """Rebuild from ``to_dict`` output (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolve_mode(self, tokenizer) -> str:
        """"aligned" or "base": ``auto`` is aligned iff the tokenizer has a chat template or a
        fallback template is named."""
        if self.mode != "auto":
            return self.mode
        has_template = bool(getattr(tokenizer, "chat_template", None)) or bool(self.chat_template)
        return "aligned" if has_template else "base"
