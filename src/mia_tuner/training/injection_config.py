"""Settings of membership injection (continued pre-training on the members), in a module
without torch so that the command line can generate its options cheaply."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ..config import DEFAULT_SEED, option
from ..errors import DataError


@dataclass
class InjectionConfig:
    VALUES: ClassVar[dict] = {"epochs": "positive", "batch_size": "positive", "max_tokens": "positive",
                              "lora_rank": "positive"}  # kinds of value (cli.fields.value_types)
    CHOICES: ClassVar[dict] = {"method": ("full", "lora")}
    # One epoch at 6e-5 mimics pre-training exposure (seen once) and gives Loss AUROC ~0.62 on
    # the offline default (docs/history.md); 2 epochs at 3e-5 gave 0.63 for twice the time.
    epochs: int = option(1, "passes of continued pre-training over the members")
    learning_rate: float = option(6e-5, "AdamW learning rate of the injection")
    batch_size: int = option(8, "members per injection step")
    max_tokens: int = option(256, "tokens of a member the injection trains on")
    method: str = option("full", "full fine-tuning, or a LoRA adapter merged afterwards")
    lora_rank: int = option(16, "LoRA rank (--method lora)")
    seed: int = option(DEFAULT_SEED, "seed of the injection's data order")

    def __post_init__(self) -> None:
        if self.method not in ("full", "lora"):
            raise DataError(f"unknown injection method {self.method!r}: use full or lora")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise DataError(f"the injection learning rate (--lr) must be a positive number, got {self.learning_rate}")
        for name in ("epochs", "batch_size", "lora_rank"):
            if getattr(self, name) < 1:
                raise DataError(f"injection {name} must be >= 1, got {getattr(self, name)}")
        if self.max_tokens < 2:
            raise DataError(f"injection max_tokens must be >= 2, got {self.max_tokens}")
