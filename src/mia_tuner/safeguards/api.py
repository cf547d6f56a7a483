"""A defence's own pieces: the texts it and its attacker see, its training, and what it returns.

The evaluation split's train part is cut in two disjoint parts: the defender's labelled texts
(training + validation of the defence) and the attacker's (what ``fused`` and MIA-Tuner learn
from). The test part is held out from both (``defence_split``). ``train_and_apply`` trains the
defence, saves it, measures its utility (before/after on general text) and returns the defended
model. Nothing here scores an attack: the suite runner does, as columns of the cell the
defence belongs to (``suite.defence``), on the undefended model, the defended one and, on a
controlled set, the model before injection (``safeguards.floor``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mia_tuner.config import SplitConfig
from mia_tuner.data.split import EvaluationSplit, carve_validation, make_split
from mia_tuner.data.types import MembershipSet
from mia_tuner.errors import DataError, MethodError
from mia_tuner.safeguards.artefact import apply_defence, read_defence_info, text_sha256
from mia_tuner.safeguards.config import DefenceConfig
from mia_tuner.safeguards.floor import Floor
from mia_tuner.safeguards.train import train_defence
from mia_tuner.safeguards.utility import Utility, measure_utility
from mia_tuner.tuner.config import TunerConfig

TUNER = "mia-tuner"


@dataclass
class DefenceResult:
    out_dir: Path
    defence_dir: Path
    rows: list[dict]
    utility: Utility
    table: str
    n_member: int
    n_nonmember: int
    seen_rows: list[dict] = field(default_factory=list)  # the attacks on the defender's own training texts
    floor: Floor | None = None  # the model before injection released (a controlled set's perfect defence)

    @classmethod
    def from_record(cls, record: dict, out_dir: Path) -> "DefenceResult":
        """The result a safeguard column's record holds (suite.defence)."""
        floor = record.get("floor")
        if floor is not None:
            floor = Floor(model=floor["model"], rows=floor["rows"], utility=utility_from(floor["utility"]))
        return cls(out_dir=out_dir, defence_dir=Path(record["defence_dir"]), rows=record["rows"],
                   utility=utility_from(record["utility"]), table=record["table"], n_member=record["n_member"],
                   n_nonmember=record["n_nonmember"], seen_rows=record["seen_rows"], floor=floor)


def utility_from(fields: dict) -> Utility:
    """A Utility from its ``to_dict`` (which adds the derived ``ppl_change``)."""
    return Utility(**{k: v for k, v in fields.items() if k != "ppl_change"})


def first_per_class(part: MembershipSet, n: int) -> MembershipSet:
    """The first ``n`` texts of each class, in row order."""
    kept, counts = [], {0: 0, 1: 0}
    for i, label in enumerate(part.labels):
        if counts[label] < n:
            kept.append(i)
            counts[label] += 1
    return part.subset(kept)


def disjoint_parts(train: MembershipSet, config: DefenceConfig):
    """(defender's training texts, defender's validation texts or None, attacker's texts):
    three disjoint parts of the evaluation split's train part."""
    smallest = min(train.n_member, train.n_nonmember)
    needed = config.attack_train_per_class + config.validation_per_class + 2
    if smallest < needed:
        raise DataError(f"the train part has {smallest} texts of its smaller class; the attacker "
                        f"({config.attack_train_per_class}) and the defender's validation "
                        f"({config.validation_per_class}) plus 2 to train need {needed}: use a larger set "
                        "or lower --attack-train-per-class / --validation-per-class")
    rest, attacker = carve_validation(train, config.attack_train_per_class, config.seed)
    defender = first_per_class(rest, config.train_per_class + config.validation_per_class)
    if not config.validation_per_class:
        return defender, None, attacker
    defender, validation = carve_validation(defender, config.validation_per_class, config.seed)
    return defender, validation, attacker


def defence_split(data: MembershipSet, config: DefenceConfig, split_config: SplitConfig):
    """(the split's settings, the split, the defender's training texts, their validation texts
    or None, the attacker's split: the attacker's texts and the held-out test part). The train
    part holds exactly the defender's and the attacker's texts."""
    needed = config.train_per_class + config.validation_per_class + config.attack_train_per_class
    split_config = replace(split_config, max_train_per_class=needed)
    split = make_split(data, split_config)
    defender, validation, attacker = disjoint_parts(split.train, config)
    return split_config, split, defender, validation, EvaluationSplit(train=attacker, test=split.test,
                                                                      report=split.report)


def check_attack(attack: TunerConfig) -> TunerConfig:
    """The attacker's MIA-Tuner, refused unless it leaves the model's modules as they were."""
    if attack.peft not in ("prompt", "prefix"):  # LoRA / IA3 would stay injected in the model
        raise MethodError(f"the attacker's MIA-Tuner in `defend` is a soft prompt or prefix, not {attack.peft}")
    return attack


def train_and_apply(loaded, defender: MembershipSet, validation: MembershipSet | None, config: DefenceConfig,
                    folder: Path, questions=None):
    """(the defended model, its utility, the training history): the defence trained on the
    defender's texts (or read when ``folder`` holds it finished), saved in ``folder``, its
    utility measured with the adapter on and off, then applied to ``loaded`` (a LoRA defence
    merged into a copy: ``loaded``'s own model stays the base model)."""
    model, history = train_defence(loaded, defender, validation, config, folder)
    utility = measure_utility(model, loaded.tokenizer, questions=questions, max_tokens=config.max_tokens)
    if config.peft == "lora":
        model.unload()  # the injected LoRA layers leave loaded.model
        loaded = replace(loaded, model=copy.deepcopy(loaded.model))
    return apply_defence(folder, loaded), utility, history


def reapplied(detector, defended_loaded, attack: TunerConfig, texts: list[str]) -> np.ndarray:
    """The attacker's detector, trained before the defence, run unchanged on the defended model."""
    from mia_tuner.training.params import load_trainable_state, trainable_state
    from mia_tuner.tuner.peft_setup import wrap_model
    from mia_tuner.tuner.pipelines import make_pipeline

    model = wrap_model(defended_loaded.model, defended_loaded.tokenizer, attack)
    load_trainable_state(model, trainable_state(detector.model))
    model.eval()
    return make_pipeline(defended_loaded, attack).score(model, texts)  # no memo of the undefended model


def check_held_out(defence_dir: Path, test: MembershipSet) -> None:
    """DataError when a test text is among those the defence trained on."""
    held_out = {text_sha256(t) for t in test.texts} & set(read_defence_info(defence_dir)["trained_on"])
    if held_out:
        raise DataError(f"{len(held_out)} test text(s) were in the defence's training texts")
