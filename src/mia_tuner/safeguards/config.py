"""The settings of a defence (a safeguard a model publisher trains) and of its evaluation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

from mia_tuner.config import DEFAULT_SEED
from mia_tuner.errors import MethodError

AGAINST = ("scores", "mia-tuner")
DEFENCE_PEFT = ("prompt", "lora")
MEMBER_TERMS = ("contrastive", "shift")
# fields added after defences were first trained and keyed: at these values they are left out
# of a key, so that the defences and records made before them stay valid
LATER_DEFAULTS = {"member_term": "contrastive", "selection_max_kl": None}
# held-out test texts per class of a defence's evaluation (`defend`, the API and the CLI alike):
# more than a scoring run's SplitConfig default, since a defence is judged by how close to 0.5 an
# AUROC gets, and 200 + 200 texts halve the interval that 50 + 50 leave
TEST_PER_CLASS = 200


@dataclass
class DefenceConfig:
    """Everything that defines one defence's training (serialisable to JSON).

    ``against="scores"``: the per-text loss of members and non-members pulled to
    indistinguishability, ``|L_ctr − L_chance|`` (the paper's safeguard), plus ``anchor_weight``
    × the KL divergence from the original model's next-token distributions on the batch's
    non-member texts (ours: keeps the defended model close to the original on text it never
    saw, so that the defence cannot hide members by moving every text). ``against="mia-tuner"``
    adds the same indistinguishability term on the model's answer to the membership question
    (the Yes − No logit margin), weighted by ``answer_weight`` (docs/safeguards.md).
    """

    CHOICES: ClassVar[dict] = {"against": AGAINST, "peft": DEFENCE_PEFT, "member_term": MEMBER_TERMS}

    against: str = field(default="scores", metadata={"help": "scores: hide members from score-based "
                         "attacks; mia-tuner: also make the membership question's answer uninformative"})
    peft: str = field(default="prompt", metadata={"help": "prompt: a defensive soft prompt applied to every "
                      "input; lora: an adapter merged into the weights"})
    num_virtual_tokens: int = field(default=20, metadata={"help": "length of the defensive prompt"})
    init_text: str = field(default="\n\n", metadata={"help": "the defensive prompt starts as this "
                           "text's embeddings, tiled"})
    lora_rank: int = field(default=8, metadata={"help": "rank of the LoRA defence (--peft lora)"})
    learning_rate: float = field(default=1e-2, metadata={"help": "AdamW learning rate of the defence"})
    epochs: int = field(default=3, metadata={"help": "epochs of the defence's training"})
    batch_per_class: int = field(default=8, metadata={"help": "members (= non-members) per training batch"})
    seed: int = field(default=DEFAULT_SEED, metadata={"help": "seed of the defence's data order and of the "
                      "defender / attacker parts"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    member_term: str = field(default="contrastive", metadata={"help": "the term that hides members' "
                             "losses: contrastive, the paper's |L_ctr - L_chance|; shift, each member's "
                             "loss raised by the members' measured advantage (docs/safeguards.md)"})
    # loss weights: the paper's loss alone is anchor_weight = 0 (and answer_weight = 0)
    defence_weight: float = field(default=1.0, metadata={"help": "weight of the member term"})
    anchor_weight: float = field(default=1.0, metadata={"help": "weight of the KL term keeping the model "
                                 "close to the original on non-member text (0: the paper's loss)"})
    answer_weight: float = field(default=1.0, metadata={"help": "weight of the membership-answer term "
                                 "(against mia-tuner)"})
    temperature: float = field(default=1.0, metadata={"help": "temperature of the contrastive similarities"})
    distance_scale: float = field(default=10.0, metadata={"help": "scale of the distances between per-text "
                                  "losses (nats) in the similarities, as MIA-Tuner's base pipeline"})
    answer_distance_scale: float = field(default=1.0, metadata={"help": "scale of the distances between "
                                         "Yes - No logit margins (against mia-tuner)"})
    system_prompt: str | None = field(default=None, metadata={"help": "system prompt of the membership "
                                      "question (against mia-tuner)"})
    # data: the defender's labelled texts, disjoint from the attacker's and from the test texts
    train_per_class: int = field(default=100, metadata={"help": "the defender's labelled texts per class"})
    validation_per_class: int = field(default=20, metadata={"help": "the defender's validation texts per "
                                      "class (checkpoint selection)"})
    selection_max_kl: float | None = field(default=None, metadata={"help": "checkpoint selection keeps "
                                           "an epoch whose mean KL from the original model on the validation "
                                           "non-members is at most this (none within it: the lowest KL); "
                                           "unset: the validation AUROC alone"})
    attack_train_per_class: int = field(default=80, metadata={"help": "the attacker's labelled texts per "
                                        "class (what fused and MIA-Tuner learn from), disjoint from the defender's"})
    attack_epochs: int = field(default=2, metadata={"help": "epochs of the attacker's MIA-Tuner (against "
                               "mia-tuner: before the defence and, adaptive, against it)"})
    max_tokens: int = field(default=256, metadata={"help": "tokens of a text the defence trains on"})
    batch_size: int = field(default=8, metadata={"help": "texts per scoring batch"})

    def __post_init__(self) -> None:
        if self.against not in AGAINST:
            raise MethodError(f"unknown --against {self.against!r}; choose one of {', '.join(AGAINST)}")
        if self.member_term not in MEMBER_TERMS:
            raise MethodError(f"unknown member_term {self.member_term!r}; choose one of {', '.join(MEMBER_TERMS)}")
        if self.peft not in DEFENCE_PEFT:
            raise MethodError(f"a defence is a soft prompt or LoRA: --peft must be one of "
                              f"{', '.join(DEFENCE_PEFT)}, got {self.peft!r}")
        for name in ("num_virtual_tokens", "lora_rank", "epochs", "train_per_class",
                     "attack_train_per_class", "attack_epochs", "max_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise MethodError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_per_class < 2:
            raise MethodError(f"batch_per_class must be >= 2 (the contrastive loss compares texts "
                              f"of one class), got {self.batch_per_class}")
        if self.validation_per_class < 0:
            raise MethodError(f"validation_per_class must be >= 0, got {self.validation_per_class}")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise MethodError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.selection_max_kl is not None and not (self.selection_max_kl >= 0
                                                      and math.isfinite(self.selection_max_kl)):
            raise MethodError(f"selection_max_kl must be a number >= 0, got {self.selection_max_kl}")
        if self.selection_max_kl is not None and self.validation_per_class < 2:
            raise MethodError("selection_max_kl selects among epochs on the validation texts: it needs "
                              f"validation_per_class >= 2, got {self.validation_per_class}")
        for name in ("defence_weight", "anchor_weight", "answer_weight"):
            if getattr(self, name) < 0:
                raise MethodError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict) -> "DefenceConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key_dict(self) -> dict:
        """``to_dict`` without the later fields at their defaults (``LATER_DEFAULTS``): what a
        cache key of this defence's settings is made of."""
        return {k: v for k, v in self.to_dict().items() if LATER_DEFAULTS.get(k, object()) != v}
