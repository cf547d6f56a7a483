"""A cell's safeguard column: a defence trained, and every attack scored by the cell before and after it.

The defence's own pieces (its split, its training, the defended model) are ``safeguards.api``'s;
every attack's scores are the cell's, recorded beside its other columns (``CellRun.score_part``):

1. every score-based attack (and ``fused``) on the held-out test texts, undefended model;
2. the same on the defender's own training texts (a defence that hides only the texts it
   trained on shows there);
3. on a controlled set, the same on the model before injection (the perfect defence's floor,
   ``safeguards.floor``);
4. against MIA-Tuner, the attacker trains it on the undefended model (non-adaptive);
5. the defence is trained, saved, and its utility measured, then 1 and 2 on the defended model;
   the non-adaptive detector runs on it unchanged, and the attacker trains MIA-Tuner anew
   against it (adaptive).

A kill loses at most one batch of scores (each part's columns are recorded as they finish, the
score cache keeps the batches) or one step of training (the defence's and MIA-Tuner's
checkpoints). The report (``report.json``, ``report.md``) is written beside the defence.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data.split import EvaluationSplit
from ..integrity import content_sha256
from ..metrics import sample_size_warning
from ..reports import _write_json
from ..safeguards.api import TUNER, check_attack, check_held_out, defence_split, reapplied, \
    train_and_apply
from ..safeguards.artefact import DEFENCE_FILE, read_defence_info
from ..safeguards.floor import Floor, floor_methods, released_utility
from ..safeguards.report import metric_row, report_table
from .store import artefact_stamp

UNDEFENDED = "undefended"
HELD_OUT, SEEN = "held-out", "seen"  # the parts the attacks are scored on


def safeguard_column(run, guard, config, folder: Path) -> dict:
    """The fields of the record of safeguard ``guard`` (its DefenceConfig ``config``) on
    ``run``'s cell, its defence and report written in ``folder``."""
    started = time.perf_counter()
    attack = check_attack(guard.attack_config(config))
    data = run.scorable_data()
    _, split, defender, validation, attack_split = defence_split(data, config, run.split_config)
    seen_split = EvaluationSplit(train=attack_split.train, test=defender)  # the defender's own texts, attacked alike
    methods = run.selected_methods(defended=True)  # the same attacks before and after (no FSD through a defence)
    before = run.score_part(HELD_OUT, attack_split, methods, UNDEFENDED)
    before_seen = run.score_part(SEEN, seen_split, methods, UNDEFENDED)
    floor = released_floor(run, attack_split, methods, before, config) if run.before_injection() else None
    loaded = run.hand_over()  # the attacker's MIA-Tuner and the defence train on it
    target = {"name": loaded.name, "fingerprint": loaded.fingerprint}
    if config.against == TUNER:
        before_tuner, detector = attacker_tuner(loaded, data, attack_split, attack, folder / "attack-before")
    defended, utility, history = train_and_apply(loaded, defender, validation, config, folder / "defence",
                                                 run.cell.questions)
    del loaded  # a LoRA defence is merged into a copy: the undefended one is not kept alive
    check_held_out(folder / "defence", split.test)
    defence = f"defence-{read_defence_info(folder / 'defence')['sha256'][:12]}"
    after = run.score_part(HELD_OUT, attack_split, methods, defence, load=lambda: defended)
    after_seen = run.score_part(SEEN, seen_split, methods, defence, load=lambda: defended)
    labels = np.array(split.test.labels)
    rows = [metric_row(m.label, labels, before[m.label], after[m.label], False) for m in methods]
    if config.against == TUNER:
        test_texts = list(split.test.texts)
        rows.append(metric_row(TUNER, labels, before_tuner, reapplied(detector, defended, attack, test_texts), False))
        adaptive, _ = attacker_tuner(defended, data, attack_split, attack, folder / "attack-after")
        rows.append(metric_row(TUNER, labels, before_tuner, adaptive, True))
    own = np.array(defender.labels)
    seen_rows = [metric_row(m.label, own, before_seen[m.label], after_seen[m.label], False) for m in methods]
    warnings = [w for w in [sample_size_warning(labels)] if w]
    table = "\n\n".join([report_table(rows, utility, seen_rows, floor), *warnings])
    if run.writer:  # the first process writes the report
        _write_json(folder / "report.json", {
            "model": target, "data": data.name, "against": config.against, "config": config.to_dict(),
            "attack": attack.to_dict(), "n_member": split.test.n_member, "n_nonmember": split.test.n_nonmember,
            "defender_texts": {"train": size(defender), "validation": size(validation)},
            "attacker_texts": size(attack_split.train), "rows": rows, "utility": utility.to_dict(),
            "history": history.summary(), "warnings": warnings,
            "seen": {"n_member": defender.n_member, "n_nonmember": defender.n_nonmember, "rows": seen_rows},
            "floor": floor.to_dict() if floor else None})
        (folder / "report.md").write_text(table + "\n", encoding="utf-8")
    defence_dir = folder / "defence"
    return {"kind": "safeguard", "safeguard": guard.tag, "against": config.against, "rows": rows,
            "utility": utility.to_dict(), "n_test": len(labels), "n_member": split.test.n_member,
            "n_nonmember": split.test.n_nonmember, "seen_rows": seen_rows,
            "floor": floor.to_dict() if floor else None, "table": table, "defence_dir": str(defence_dir),
            "seconds": time.perf_counter() - started,
            **(artefact_stamp(defence_dir / DEFENCE_FILE) if run.cell.artefact_dir else {})}


def size(part) -> int:
    return 0 if part is None else part.n_member + part.n_nonmember


def released_floor(run, split: EvaluationSplit, methods: list, before: dict, config) -> Floor:
    """The perfect defence on a controlled set: the attacks on the model before injection
    (scored by the cell: the released model's columns), and what releasing it costs."""
    from ..models import load_model

    released_config = run.before_injection()
    released = load_model(released_config, cache_dir=run.cache_dir)  # its utility is measured in any case
    chosen = floor_methods(methods, run.resolved.reference, released_config.name)
    tag = f"released-{content_sha256([released_config.name, released.fingerprint])[:12]}"  # keyed by its weights
    after = run.score_part(HELD_OUT, split, chosen, tag, load=lambda: released,
                           config=replace(run.run_config(), model=released_config))
    labels = np.array(split.test.labels)
    rows = [metric_row(m.label, labels, before[m.label], after[m.label], False) for m in chosen]
    utility = released_utility(released, run.load(), questions=run.cell.questions, max_tokens=config.max_tokens)
    return Floor(model=released_config.name, rows=rows, utility=utility)


def attacker_tuner(loaded, data, split: EvaluationSplit, attack, folder: Path):
    """MIA-Tuner trained by the attacker on ``split.train`` (resumed from ``folder``): (its
    test scores, the detector)."""
    from ..tuner.api import ROW, train_detector

    result = train_detector(loaded, data, attack, out_dir=folder, split=split)
    return result.scores[ROW], result.detector
