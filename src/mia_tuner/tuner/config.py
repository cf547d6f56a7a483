"""MIA-Tuner's settings: pipeline, adapter, optimisation, loss weights and data sizes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from mia_tuner.config import DEFAULT_SEED, option
from mia_tuner.errors import MethodError
from mia_tuner.tuner import prompts

MODES = ("auto", "aligned", "base")
PEFT_KINDS = ("prompt", "lora", "prefix", "ia3")
BASE_SCORES = ("raw", "calibrated")

# Optimisation presets (learning rate, epochs, B = members = non-members per batch).
PRESETS: dict[str, dict] = {
    # The official experiments: AdamW 5e-4, linear decay, 50 epochs, 8 + 8 per batch.
    "paper": dict(learning_rate=5e-4, epochs=50, batch_per_class=8),
    # Measured on the offline SmolLM2, WikiMIA-24 length 32 (docs/history.md, "MIA-Tuner"): at
    # lr 1e-2 with the hybrid loss, test AUROC climbs 0.67, 0.73, 0.78, 0.80, 0.81 over
    # epochs 1-5 (validation picks epoch 5); an earlier probe at the paper's 5e-4 (plain
    # Yes/No cross-entropy) stayed at 0.43-0.47 for 6 epochs. Five epochs is what fits the 20-minute budget
    # of a CPU run; the curve is still rising, so GPU users should raise `epochs`.
    "default": dict(learning_rate=1e-2, epochs=5, batch_per_class=8),
}


_opt = option  # a field with its command-line help (mia_tuner.config.option)


_FLAGS = {"learning_rate": "--lr"}  # fields whose option on the command line has another name


def _named(field: str) -> str:
    """A field as a user meets it: ``learning_rate (--lr)``."""
    return f"{field} ({_FLAGS.get(field, '--' + field.replace('_', '-'))})"


@dataclass
class TunerConfig:
    """Everything that defines one MIA-Tuner training run (serialisable to JSON).

    The dataclass defaults are the ``"default"`` preset; ``from_preset`` picks another.
    """

    VALUES: ClassVar[dict] = {"epochs": "positive", "batch_per_class": "positive", "num_virtual_tokens": "positive",
                              "max_tokens": "tokens"}
    CHOICES: ClassVar[dict] = {"mode": MODES, "peft": PEFT_KINDS, "base_score": BASE_SCORES}

    mode: str = _opt("auto", "auto: aligned iff the tokenizer has a chat template (or --chat-template "
                     "names one); aligned: Yes/No answers; base: contrastive loss on per-text losses")
    peft: str = _opt("prompt", "the trained adapter: soft prompt, LoRA, prefix tuning or IA3")
    num_virtual_tokens: int = _opt(50, "soft prompt / prefix length")
    share_prefix: bool = _opt(True, "run the soft prompt and the tokens every text of a batch shares (a "
                                    "chat template's opening) once per batch instead of once per text "
                                    "(same numbers, less compute)")
    gradient_checkpointing: bool = _opt(False, "recompute each decoder layer's activations in the backward "
                                              "instead of keeping them: less memory for a second forward's "
                                              "time (turns off --share-prefix)")
    init_text: str = _opt(prompts.INIT_TEXT, "the soft prompt starts as this text's embeddings")
    lora_rank: int = _opt(8, "LoRA rank (--peft lora)")
    learning_rate: float = _opt(PRESETS["default"]["learning_rate"], "AdamW learning rate")
    epochs: int = _opt(PRESETS["default"]["epochs"], "passes over the training texts")
    batch_per_class: int = _opt(PRESETS["default"]["batch_per_class"], "members (= non-members) per batch")
    grad_accum: int = _opt(1, "batches per optimizer update")
    seed: int = _opt(DEFAULT_SEED, "seed of the training's data order and of the adapter's initialisation")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    # pipeline A (aligned) loss weights
    lm_weight: float = _opt(1.0, "aligned: weight of the language-modelling term")
    classification_weight: float = _opt(1.0, "aligned: weight of the Yes/No cross-entropy")
    error_weight: float = _opt(1.0, "aligned: weight of the error term (the wrong answer's probability)")
    pre_answer_weight: float = _opt(0.01, "aligned: weight of the prompt's tokens in the LM term")
    # pipeline B (base) loss weights and similarity settings
    contrastive_weight: float = _opt(1.0, "base: weight of the contrastive loss")
    hinge_weight: float = _opt(1.0, "base: weight of the hinge (members below non-members)")
    temperature: float = _opt(1.0, "base: temperature of the contrastive similarities")
    distance_scale: float = _opt(10.0, "base: distance scale of the similarities (nats)")
    base_score: str = _opt("raw", "base: raw: the text's loss under the prompt (the paper); calibrated: "
                                  "minus its loss without the prompt (a learned ReCaLL)")
    # prompt format (pipeline A)
    system_prompt: str | None = _opt(None, "aligned: a system message before the question")
    long_answer: bool = _opt(False, "aligned: the paper figure's answer sentence instead of Yes/No")
    full_vocab_classification: bool = _opt(False, "aligned: cross-entropy over the whole vocabulary "
                                                  "(paper-figure variant)")
    chat_template: str | None = _opt(None, "fallback template for a tokenizer that has none")
    # data
    train_per_class: int = _opt(80, "labelled training texts per class")
    validation_per_class: int = _opt(10, "validation texts per class, taken from the training texts "
                                         "(checkpoint selection; the untrained prompt is a candidate)")
    target_fpr: float = _opt(0.01, "the detector's threshold keeps validation FPR at or below this")
    max_tokens: int = _opt(256, "texts are truncated to this many tokens (the baselines use the model context)")
    batch_size: int = _opt(8, "scoring batch size (inference only)")

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
