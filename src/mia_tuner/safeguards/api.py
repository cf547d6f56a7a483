"""A defence evaluated end to end: every attack before and after, on texts nobody trained on.

The evaluation split's train part is cut in two disjoint parts: the defender's labelled texts
(training + validation of the defence) and the attacker's (what ``fused`` and MIA-Tuner learn
from). The test part is held out from both. Then:

1. every score-based attack (and ``fused``) on the test texts, undefended model (cached);
2. against MIA-Tuner: the attacker trains MIA-Tuner on the undefended model (non-adaptive);
3. the defence is trained, saved, and its utility measured (before/after on general text);
4. the same attacks on the defended model; the non-adaptive detector is run on it unchanged,
   and the attacker trains MIA-Tuner anew against the defended model (adaptive).

The report holds AUROC and TPR@1%FPR before and after with intervals, for every attack, and
two columns beside them: the same attacks before and after on the defender's own training texts
(a defence that hides only the texts it trained on shows there), and, on a controlled set whose
model before injection is given, that model's AUROC: the perfect defence's floor
(``safeguards.floor``).
Under several processes (``accelerate launch`` / ``torchrun``) the attacks' scoring is split
between them, the defence and the attacker's MIA-Tuner train on a slice of each batch each,
and the first process writes the report.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mia_tuner.config import MethodConfig, ModelConfig, RunConfig, SplitConfig
from mia_tuner.data.split import EvaluationSplit, carve_validation, make_split
from mia_tuner.data.types import MembershipSet
from mia_tuner.data.validation import drop_unscorable
from mia_tuner.errors import DataError, MethodError
from mia_tuner.metrics import sample_size_warning
from mia_tuner.reports import _write_json
from mia_tuner.scoring import process_shard
from mia_tuner.safeguards.artefact import apply_defence, read_defence_info, text_sha256
from mia_tuner.safeguards.config import TEST_PER_CLASS, DefenceConfig
from mia_tuner.safeguards.floor import Floor, perfect_defence_floor
from mia_tuner.safeguards.report import metric_row, report_table
from mia_tuner.safeguards.train import train_defence
from mia_tuner.safeguards.utility import Utility, measure_utility
from mia_tuner.tuner.config import TunerConfig

log = logging.getLogger(__name__)
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


def defence_split(data: MembershipSet, config: DefenceConfig, split_config: SplitConfig | None = None):
    """(the split's settings, the split, the defender's training texts, their validation texts
    or None, the attacker's split: the attacker's texts and the held-out test part). The train
    part holds exactly the defender's and the attacker's texts."""
    needed = config.train_per_class + config.validation_per_class + config.attack_train_per_class
    split_config = replace(split_config or SplitConfig(max_test_per_class=TEST_PER_CLASS), max_train_per_class=needed)
    split = make_split(data, split_config)
    defender, validation, attacker = disjoint_parts(split.train, config)
    return split_config, split, defender, validation, EvaluationSplit(train=attacker, test=split.test,
                                                                      report=split.report)


def _attack_config(config: DefenceConfig, attack: TunerConfig | None) -> TunerConfig:
    attack = attack or TunerConfig(epochs=config.attack_epochs, seed=config.seed)
    if attack.peft not in ("prompt", "prefix"):  # LoRA / IA3 would stay injected in the model
        raise MethodError(f"the attacker's MIA-Tuner in `defend` is a soft prompt or prefix, not {attack.peft}")
    return attack


def _tuner_scores(loaded, data, split, attack: TunerConfig, out_dir: Path):
    """MIA-Tuner trained by the attacker on ``split.train``: (test scores, detector model)."""
    from mia_tuner.tuner.api import ROW, train_detector

    result = train_detector(loaded, data, attack, out_dir=out_dir, split=split)
    return result.scores[ROW], result.detector


def _reapplied(detector, defended_loaded, attack: TunerConfig, texts: list[str]) -> np.ndarray:
    """The attacker's detector, trained before the defence, run unchanged on the defended model."""
    from mia_tuner.training.params import load_trainable_state, trainable_state
    from mia_tuner.tuner.peft_setup import wrap_model

    from mia_tuner.tuner.pipelines import make_pipeline

    model = wrap_model(defended_loaded.model, defended_loaded.tokenizer, attack)
    load_trainable_state(model, trainable_state(detector.model))
    model.eval()
    return make_pipeline(defended_loaded, attack).score(model, texts)  # no memo of the undefended model


def _attacks(run_config: RunConfig) -> list:
    from mia_tuner.run import select_methods

    # the same attacks before and after: FSD, which fine-tunes the target, cannot run on the defended model
    return select_methods(run_config, defended=True)


def _score_attacks(run_config: RunConfig, loaded, split: EvaluationSplit, shard=None) -> dict:
    from mia_tuner.run import score_split

    scores, _, _ = score_split(run_config, loaded, split, _attacks(run_config), shard)
    return scores


def _seen_rows(defender: MembershipSet, before: dict, after: dict) -> list[dict]:
    labels = np.array(defender.labels)
    return [metric_row(m, labels, before[m], after[m], False) for m in before]


def defend(loaded, data: MembershipSet, config: DefenceConfig, out_dir, *,
           split_config: SplitConfig | None = None, methods: MethodConfig | None = None,
           reference: str | None = None, cache_dir=None, attack: TunerConfig | None = None,
           questions=None, model_config: ModelConfig | None = None,
           before_injection: ModelConfig | None = None) -> DefenceResult:
    """Train a defence for ``loaded`` on ``data`` and measure every attack before and after it
    (module docstring). ``before_injection``: on a controlled set, the model before its members
    were injected, reported as the perfect defence. Writes ``out_dir/defence`` (the artefact),
    ``out_dir/report.json`` and ``out_dir/report.md``."""
    out = Path(out_dir)
    data = drop_unscorable(data, loaded.tokenizer, max_tokens=loaded.max_tokens)
    split_config, split, defender, validation, attack_split = defence_split(data, config, split_config)
    attacker = attack_split.train
    run_config = RunConfig.compose(model_config or ModelConfig(name=loaded.name, device=loaded.device.type),
                                   split=split_config, methods=methods or MethodConfig(batch_size=config.batch_size),
                                   reference=reference, out=out / "runs", cache_dir=cache_dir)
    labels = np.array(split.test.labels)
    shard = process_shard(cpu=loaded.device.type == "cpu")
    before = _score_attacks(run_config, loaded, attack_split, shard)
    seen_split = EvaluationSplit(train=attacker, test=defender)  # the defender's own texts, attacked alike
    before_seen = _score_attacks(run_config, loaded, seen_split, shard)
    floor = None
    if before_injection is not None:
        floor = perfect_defence_floor(run_config, loaded, before_injection, attack_split, before,
                                      _attacks(run_config), shard=shard, questions=questions,
                                      max_tokens=config.max_tokens)
    against_tuner = config.against == TUNER
    attack_config = _attack_config(config, attack)
    detector = None
    if against_tuner:
        before[TUNER], detector = _tuner_scores(loaded, data, attack_split, attack_config, out / "attack-before")
    model, history = train_defence(loaded, defender, validation, config, out / "defence")
    utility = measure_utility(model, loaded.tokenizer, questions=questions, max_tokens=config.max_tokens)
    if config.peft == "lora":
        model.unload()  # the injected LoRA layers leave loaded.model
        # merged into a copy: the caller's model (and its fingerprint) stays the base model
        loaded = replace(loaded, model=copy.deepcopy(loaded.model))
    defended_loaded = apply_defence(out / "defence", loaded)
    after = _score_attacks(run_config, defended_loaded, attack_split, shard)
    seen_rows = _seen_rows(defender, before_seen, _score_attacks(run_config, defended_loaded, seen_split, shard))
    rows = [metric_row(m, labels, before[m], after[m], False) for m in before if m != TUNER]
    if against_tuner:
        rows.append(metric_row(TUNER, labels, before[TUNER], _reapplied(detector, defended_loaded, attack_config,
                                                                   list(split.test.texts)), False))
        adaptive, _ = _tuner_scores(defended_loaded, data, attack_split, attack_config, out / "attack-after")
        rows.append(metric_row(TUNER, labels, before[TUNER], adaptive, True))
    info = read_defence_info(out / "defence")
    held_out = {text_sha256(t) for t in split.test.texts} & set(info["trained_on"])
    if held_out:
        raise DataError(f"{len(held_out)} test text(s) were in the defence's training texts")
    warnings = [w for w in [sample_size_warning(labels)] if w]
    table = "\n\n".join([report_table(rows, utility, seen_rows, floor), *warnings])
    result = DefenceResult(out_dir=out, defence_dir=out / "defence", rows=rows, utility=utility, table=table,
                           n_member=split.test.n_member, n_nonmember=split.test.n_nonmember,
                           seen_rows=seen_rows, floor=floor)
    if shard is not None and shard.rank != 0:  # the first process writes the report
        return result
    _write_json(out / "report.json", {
        "model": {"name": loaded.name, "fingerprint": loaded.fingerprint}, "data": data.name,
        "against": config.against, "config": config.to_dict(), "attack": attack_config.to_dict(),
        "n_member": split.test.n_member, "n_nonmember": split.test.n_nonmember,
        "defender_texts": {"train": defender.n_member + defender.n_nonmember,
                           "validation": 0 if validation is None else validation.n_member + validation.n_nonmember},
        "attacker_texts": attacker.n_member + attacker.n_nonmember,
        "rows": rows, "utility": utility.to_dict(), "history": history.summary(), "warnings": warnings,
        "seen": {"n_member": defender.n_member, "n_nonmember": defender.n_nonmember, "rows": seen_rows},
        "floor": floor.to_dict() if floor else None})
    (out / "report.md").write_text(table + "\n", encoding="utf-8")
    return result
