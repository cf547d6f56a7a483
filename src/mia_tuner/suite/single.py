"""A one-cell suite run as a command: its cell computed by the suite runner, then written as a
run directory (scores.csv, metrics.json, table.md, plots) from the cell's records.

The records live in ``<out>/cells/``: a re-run into the same folder reads them and loads no
model; a run into another folder recomputes nothing either, reading the score cache and the
detectors filed in the cache.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError
from .cell import Cell, CellRun
from .config import DatasetEntry, SuiteConfig


# what a run directory's metrics.json says of each MIA-Tuner variant (its record's fields)
LEARNED_FIELDS = ("mode", "config", "detector", "threshold", "validation_auroc", "validation", "train_seconds",
                  "history", "steps")


def run_single_cell(cell: SuiteConfig | Cell, out, *, cache_dir=None, data_root=None, data=None, loaded=None,
                    named=None):
    """Run a ``Cell`` (or a one-cell suite, its cell using the cache ``cache_dir``) into the run directory
    ``out``; a ``run.RunResult``. ``data``, ``named`` and ``loaded``: the set (and the named set
    it came from) and the target already in memory."""
    run, records = run_one_cell(cell, out, cache_dir=cache_dir, data_root=data_root, data=data, loaded=loaded,
                                named=named, facts=True)
    say_recorded_choices(run, records)
    return write_cell_run(run, records, out)


def say_recorded_choices(run, records: list[dict]) -> None:
    """Print how each fine-tuned model a recorded column read was chosen (the line its first
    run printed while it fine-tuned or read the model: references.describe)."""
    said = set()
    for record in records:
        card = (record.get("info") or {}).get("fine_tuned") or {}
        line = card.get("description")
        if record.get("method") not in run.computed and line and line not in said:
            print(line)
            said.add(line)


def run_one_cell(cell: SuiteConfig | Cell, out, *, cache_dir=None, data_root=None, data=None, loaded=None,
                 named=None, facts: bool = False):
    """(the cell's run, its records): a ``Cell`` or a one-cell suite computed, its records
    kept in ``out``'s cells/ (`defend` prints its table from its safeguard's record). ``facts``: the target's
    facts a run directory reports recorded first, before a trainer takes the model over."""
    from ..run import runs_on_cpu
    from ..scoring import process_shard
    from .runner import cells, run_cell

    if isinstance(cell, SuiteConfig):
        matrix = cells(cell, cache_dir)
        if len(matrix) != 1:
            raise ConfigError(f"suite {cell.name!r} has {len(matrix)} cells; a command's run holds one")
        cell = replace(matrix[0], command=True)  # run as a command's (the demo)
    # several processes: each scores its batches (made before the model is loaded, so that
    # "cuda" means this process's GPU, as accelerate sets it)
    on_cpu = loaded.device.type == "cpu" if loaded is not None else runs_on_cpu(cell.run.model)
    run = CellRun(cell, Path(out), data_root, process_shard(cpu=on_cpu), data=data, loaded=loaded, named=named)
    if facts:
        run.target_facts()
    return run, run_cell(run)


def command_cell(config: RunConfig, data=None, **settings) -> Cell:
    """A command's one cell: ``config``'s model, set, split and methods (a method it names that
    cannot run is an error); ``settings``: the cell's other fields (MIA-Tuner variants, a
    defence)."""
    name = config.data.path or (data.name if data is not None else "")
    return Cell(config, DatasetEntry(set=name, split=config.data.split), command=True, **settings)


def defence_cell(config: RunConfig, data, defence, out, *, questions=None, attack=None) -> Cell:
    """`defend`'s one cell: the safeguard ``defence`` (DefenceConfig) its one column, scored on
    ``config``'s model, set, split and methods, its defence and report in ``out``; ``attack``:
    the attacker's TunerConfig (default: the defence's attack_epochs and seed)."""
    from .config import SafeguardEntry

    entry = SafeguardEntry(tag=defence.against, settings=defence.to_dict(),
                           attack=attack.to_dict() if attack is not None else None)
    return command_cell(config, data, safeguards=[entry], scored=False, artefact_dir=str(out), questions=questions)


def run_scores(config: RunConfig, *, data=None, loaded=None):
    """Score the test part of ``config``'s evaluation split with every method and write the run
    directory ``config.out``: a one-cell suite of the methods alone (a ``run.RunResult``).
    ``data`` and ``loaded``: the labelled set and the target (defended or not) already in memory."""
    from ..run import checked_methods

    checked_methods(config)  # every setting that needs no model, before any work
    return run_single_cell(command_cell(config, data), config.out, data=data, loaded=loaded)


def defend(loaded, data, config, out_dir, *, split_config=None, methods=None, reference: str | None = None,
           cache_dir=None, attack=None, questions=None, model_config=None, before_injection=None):
    """Train a defence (DefenceConfig ``config``) for ``loaded`` on ``data`` and measure every
    attack before and after it, as `mia-tuner defend` does: a one-cell suite whose one column is
    the safeguard. ``attack``: the attacker's TunerConfig; ``before_injection``: on a controlled
    set, the model before its members were injected, reported as the perfect defence. Writes
    ``out_dir/defence`` (the artefact), ``out_dir/report.json``, ``out_dir/report.md`` and the
    cell's records (``out_dir/cells``: a second call reads them)."""
    from ..config import MethodConfig, ModelConfig, SplitConfig
    from ..data.registry import NamedSet
    from ..safeguards.api import DefenceResult
    from ..safeguards.config import TEST_PER_CLASS

    model = model_config or ModelConfig(name=loaded.name, device=loaded.device.type)
    run_config = RunConfig.compose(model, split=split_config or SplitConfig(max_test_per_class=TEST_PER_CLASS),
                                   methods=methods or MethodConfig(batch_size=config.batch_size),
                                   reference=reference, out=out_dir, cache_dir=cache_dir)
    # a set that brings the model before injection, as a controlled set does
    named = None if before_injection is None else NamedSet(data, data.name, "", model=model.name,
                                                           reference=before_injection.name)
    cell = defence_cell(run_config, data, config, out_dir, questions=questions, attack=attack)
    _, records = run_one_cell(cell, out_dir, data=data, loaded=loaded, named=named)
    return DefenceResult.from_record(next(r for r in records if r["kind"] == "safeguard"), Path(out_dir))


def write_cell_run(run, records: list[dict], out):
    """The run directory of ``run``'s cell from its ``records``: the learned columns (MIA-Tuner
    variants) first, then the score-based methods in the order they were selected."""
    from ..methods.base import GROUPS, method_group
    from ..metrics import compute_metrics
    from ..reports import metrics_table, table_text, with_note, write_run
    from ..run import RunResult, validation_aurocs, wrong_way_warnings

    # the cell's record (a process that writes no records has none in ``records``)
    described = next((r for r in records if r["kind"] == "cell"), None) or run.describe()
    methods = {m.label: m for m in run.selected_methods()} if run.cell.scored else {}
    learned = [r for r in records if r["kind"] == "method" and r["method"] not in methods]
    scored = {r["method"]: r for r in records if r["kind"] == "method" and r["method"] in methods}
    scores = {r["method"]: np.asarray(r["scores"], dtype=float) for r in learned}
    scores.update({label: np.asarray(scored[label]["scores"], dtype=float) for label in methods})
    info = {label: run_info(scored[label]["info"], label in run.computed) for label in methods}
    validation = validation_aurocs(info)
    validation.update({r["method"]: r["validation_auroc"] for r in learned if r.get("validation_auroc") is not None})
    groups = {r["method"]: GROUPS[1] for r in learned}  # trained on labelled texts
    groups.update({label: method_group(m) for label, m in methods.items()})
    warnings = wrong_way_warnings(validation)
    labels = np.array(run.split.test.labels)
    metrics = {name: compute_metrics(labels, s) for name, s in scores.items()}
    facts, data = run.target_facts(), run.resolved.data
    extra = {"model": {k: facts[k] for k in ("name", "fingerprint", "device")},
             "data": {"name": data.name, **data.info}, "hygiene": described["hygiene"],
             "split": described["split"], "methods": info, "max_tokens": facts["max_tokens"],
             "truncated_texts": facts["truncated_texts"], "groups": groups, "validation_auroc": validation}
    if learned:  # each MIA-Tuner variant: its detector, threshold and training
        extra["learned"] = {r["method"]: {k: r.get(k) for k in LEARNED_FIELDS} for r in learned}
    if run.writer:
        write_run(out, config=run.run_config(out).to_dict(), texts=list(run.split.test.texts), labels=labels,
                  scores=scores, metrics=metrics, extra=extra, warnings=warnings)
    table = with_note(table_text(metrics_table(metrics)), labels, warnings)
    return RunResult(out_dir=Path(out), scores=scores, metrics=metrics, table=table, test=run.split.test,
                     train=run.split.train, hygiene=described["hygiene"], split_report=described["split"],
                     data=data, groups=groups, warnings=warnings, records=records)


def run_info(info: dict, computed_now: bool) -> dict:
    """A method's info as this run saw it: read from the cell's record, nothing of it was
    computed (``from_record``: its counts of computed and cached texts are the first run's)."""
    if computed_now:
        return info
    total = info.get("computed", 0) + info.get("cached", 0)
    return {**info, "computed": 0, "cached": total, "from_record": True}
