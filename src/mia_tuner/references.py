"""Models fine-tuned on the training part's non-members, for the methods that read them: the
reference adapted to the texts' domain (rows ``<method>:adapted``) and FSD's fine-tuned target.

Each is made from a fresh copy of its base model (the reference, or the target) fine-tuned on
the non-members of the evaluation split's training part, less a validation part of
``adapt_validation_per_class`` texts per class (members are never trained on, test texts never
seen): every fine-tuning of ``adapt_grid`` (full or LoRA, a learning rate) for ``adapt_epochs``
epochs, every epoch a candidate. The candidate whose best method reaches the highest validation
AUROC is kept (without validation texts: one epoch of the first fine-tuning, and the report
says it was not chosen). It is saved in the cache, keyed by the base model's weights, the
texts, the validation texts, what judged the candidates and every setting, its files hashed
and checked whenever it is read again. A stopped build continues: the candidates judged and the
best model so far are kept on disk, and a fine-tuning resumes from its last checkpoint.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import resource
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

from .config import MethodConfig, ModelConfig, parse_fine_tuning
from .data.split import EvaluationSplit, carve_validation
from .data.types import NON_MEMBER, MembershipSet
from .errors import ArtefactError
from .integrity import changed_files, content_sha256, file_records, replace_atomically
from .methods.base import ADAPTED_REFERENCE, FINE_TUNED_TARGET, ScoringContext
from .methods.token_stats import StatsProvider

log = logging.getLogger(__name__)
MAX_TOKENS = 256  # tokens of a text the fine-tuning reads (the injection's budget)
CARD = "card.json"
PROGRESS = "progress.json"
WHAT = {ADAPTED_REFERENCE: "adapted reference", FINE_TUNED_TARGET: "FSD's fine-tuned target"}


@dataclass
class FineTuneJob:
    """One model to fine-tune on non-members and choose on validation texts."""

    role: str
    base: ModelConfig  # how the chosen model is loaded back (device, precision)
    fresh: Callable[[], object]  # a new LoadedModel of the base weights, free to change
    base_fingerprint: str
    texts: list[str]  # the non-members trained on
    validation: MembershipSet | None
    settings: MethodConfig
    seed: int
    evaluate: Callable[[object], dict[str, float]]  # LoadedModel -> validation AUROC per method
    judged_by: dict  # what ``evaluate`` depends on (part of the cache key)
    cache_dir: str

    def key(self) -> str:
        s = self.settings
        return content_sha256({"role": self.role, "base": self.base_fingerprint,
                               "texts": content_sha256(self.texts),
                               "validation": self.validation.fingerprint() if self.validation else None,
                               "grid": list(s.adapt_grid), "epochs": s.adapt_epochs, "batch_size": s.batch_size,
                               "max_tokens": MAX_TOKENS, "seed": self.seed, "judged_by": self.judged_by})

    def folder(self) -> Path:
        return Path(self.cache_dir) / "fine-tuned" / f"{self.role.replace(':', '-')}-{self.key()[:16]}"

    def grid(self) -> list[tuple[str, float, int]]:
        """(kind, learning rate, epochs) of every fine-tuning to run."""
        if self.validation is None:  # nothing to choose with: one epoch of the first
            return [(*parse_fine_tuning(self.settings.adapt_grid[0]), 1)]
        return [(*parse_fine_tuning(entry), self.settings.adapt_epochs) for entry in self.settings.adapt_grid]


# ---------------------------------------------------------------- the validation part


def validation_part(split: EvaluationSplit, settings: MethodConfig, seed: int):
    """(non-members to train on, validation texts or None): ``adapt_validation_per_class`` of
    each class (at most a quarter of the smaller class) held out of the training part."""
    train = split.train
    per_class = min(settings.adapt_validation_per_class, min(train.n_member, train.n_nonmember) // 4)
    validation = None
    if per_class >= 1:
        train, validation = carve_validation(train, per_class, seed)
    return [t for t, y in zip(train.texts, train.labels) if y == NON_MEMBER], validation


def auroc(labels, scores) -> float:
    return float(roc_auc_score(np.asarray(labels), np.asarray(scores)))


# ---------------------------------------------------------------- build, resume, load


def _progress(folder: Path) -> dict:
    path = folder / PROGRESS
    return json.loads(path.read_text("utf-8")) if path.is_file() else {"candidates": [], "finished": []}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    replace_atomically(tmp, path)


def _save_model(model, tokenizer, kind: str, target: Path) -> None:
    """The model (a LoRA adapter merged into a copy) into ``target``, replacing what was there."""
    if kind == "lora":
        model = copy.deepcopy(model).merge_and_unload()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def _run_candidates(job: FineTuneJob, folder: Path) -> dict:
    """Fine-tune and judge every candidate not judged yet; the best model ends in folder/model."""
    from .training.checkpoint import Checkpoint
    from .training.injection import InjectionConfig, continue_pretraining

    progress = _progress(folder)
    for kind, rate, epochs in job.grid():
        name = f"{kind}:{rate:g}"
        if name in progress["finished"]:
            continue
        loaded = job.fresh()
        config = InjectionConfig(epochs=epochs, learning_rate=rate, batch_size=job.settings.batch_size,
                                 max_tokens=MAX_TOKENS, method=kind, seed=job.seed)

        def on_epoch(epoch: int, model, kind=kind, name=name, loaded=loaded) -> None:
            if any(c["fine_tuning"] == name and c["epoch"] == epoch for c in progress["candidates"]):
                return  # judged before a restart
            aurocs = job.evaluate(replace(loaded, model=model, fingerprint=f"candidate-{name}-{epoch}")) \
                if job.validation is not None else {}
            best = max(aurocs.values()) if aurocs else None
            record = {"fine_tuning": name, "epoch": epoch, "validation_auroc": aurocs, "best": best}
            chosen = progress.get("chosen")
            if chosen is None or (best is not None and best > chosen["best"]):
                _save_model(model, loaded.tokenizer, kind, folder / "model")
                progress["chosen"] = record
            progress["candidates"].append(record)
            _write_json(folder / PROGRESS, progress)

        checkpoint = Checkpoint(folder / f"checkpoint-{kind}-{rate:g}", job.key())
        continue_pretraining(loaded.model, loaded.tokenizer, job.texts, config, checkpoint=checkpoint,
                             on_epoch=on_epoch, desc=f"{WHAT[job.role]}: {kind} lr {rate:g}")
        checkpoint.clear()
        progress["finished"].append(name)
        _write_json(folder / PROGRESS, progress)
    return progress


def ensure_fine_tuned(job: FineTuneJob) -> tuple[Path, dict]:
    """The folder of the chosen model (built, or checked and reused) and its card. Processes
    that ask for the same model together (several scoring processes) wait for the first."""
    folder = job.folder()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _built_or_build(job, folder)


def _built_or_build(job: FineTuneJob, folder: Path) -> tuple[Path, dict]:
    card_path = folder / CARD
    if card_path.is_file():
        card = json.loads(card_path.read_text("utf-8"))
        problems = changed_files(folder / "model", card.get("files", {}))
        if problems:
            raise ArtefactError(f"the {WHAT[job.role]} in {folder} is damaged ({'; '.join(problems)}); "
                                "delete the folder to build it again")
        return folder / "model", card
    started = time.perf_counter()
    print(f"Fine-tuning the {WHAT[job.role]} on {len(job.texts)} training non-members, chosen on "
          f"{0 if job.validation is None else len(job.validation)} validation texts, in {folder} ...")
    progress = _run_candidates(job, folder)
    card = {"role": job.role, "base": job.base.name, "base_fingerprint": job.base_fingerprint,
            "n_trained_on": len(job.texts), "n_validation": 0 if job.validation is None else len(job.validation),
            "chosen": progress["chosen"], "candidates": progress["candidates"],
            "selected_on_validation": job.validation is not None, "judged_by": job.judged_by,
            "seconds": round(time.perf_counter() - started, 1),  # of this run (a resumed build: its last part)
            # the process's peak resident memory when the fine-tuning ended (an upper bound of its own)
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "built": time.strftime("%Y-%m-%d %H:%M:%S"), "files": file_records(folder / "model")}
    _write_json(card_path, card)  # written last: marks completion
    (folder / PROGRESS).unlink(missing_ok=True)
    return folder / "model", card


def describe(card: dict) -> str:
    """One line: what was kept and why."""
    chosen = card["chosen"]
    kind, _, rate = chosen["fine_tuning"].partition(":")
    what = f"{'full fine-tuning' if kind == 'full' else 'LoRA'}, lr {rate}, {chosen['epoch']} epoch(s)"
    if not card["selected_on_validation"]:
        return f"{WHAT[card['role']]}: {what} (no validation texts: not chosen)"
    method, value = max(chosen["validation_auroc"].items(), key=lambda item: item[1])
    return (f"{WHAT[card['role']]}: {what}, chosen among {len(card['candidates'])} candidates by "
            f"validation AUROC {value:.3f} ({method}, {card['n_validation']} texts)")


# ---------------------------------------------------------------- the run's factories


def _evaluator(methods, ctx: ScoringContext, validation: MembershipSet, role: str):
    """Validation AUROC of each of ``methods`` with a candidate in ``role``."""
    def evaluate(candidate) -> dict[str, float]:
        provider = StatsProvider(candidate, batch_size=ctx.settings.batch_size, max_tokens=ctx.target.max_tokens,
                                 desc="validation")
        trial = ScoringContext(target=ctx.target, settings=ctx.settings, providers={role: provider},
                               same_tokenizer=ctx.same_tokenizer, seed=ctx.seed)
        texts = list(validation.texts)
        return {m.label: auroc(validation.labels, m.score(texts, trial)) for m in methods}
    return evaluate


def summary(card: dict) -> dict:
    """A card without its file records, with its one-line description."""
    return {"description": describe(card), **{k: v for k, v in card.items() if k != "files"}}


def fine_tuned_factories(methods, ctx: ScoringContext, split: EvaluationSplit, target: ModelConfig,
                         reference: ModelConfig | None, cache_dir) -> dict[str, Callable[[], StatsProvider]]:
    """Lazy StatsProviders of the fine-tuned models ``methods`` read (by role), each built or
    read from the cache on first use; its card goes to ``ctx.shared["fine_tuned"][role]``."""
    from .models import load_model

    bases = {ADAPTED_REFERENCE: reference, FINE_TUNED_TARGET: target}
    fresh = {ADAPTED_REFERENCE: lambda: load_model(reference, cache_dir=cache_dir),
             # a copy of the target as loaded (it may exist only in memory)
             FINE_TUNED_TARGET: lambda: replace(ctx.target.loaded, model=copy.deepcopy(ctx.target.loaded.model))}
    factories = {}
    for role, base in bases.items():
        readers = [m for m in methods if m.fine_tuned_role == role]
        if not readers or base is None:
            continue

        def factory(role=role, base=base, readers=readers):
            texts, validation = validation_part(split, ctx.settings, ctx.seed)
            fingerprint = (ctx.reference_stats().loaded.fingerprint if role == ADAPTED_REFERENCE
                           else ctx.target.loaded.fingerprint)
            judged_by = {"methods": sorted(m.label for m in readers), "target": ctx.target.loaded.fingerprint,
                         "target_max_tokens": ctx.target.max_tokens}
            job = FineTuneJob(role, base, fresh[role], fingerprint, texts, validation, ctx.settings, ctx.seed,
                              _evaluator(readers, ctx, validation, role) if validation else None,
                              judged_by, str(cache_dir))
            folder, card = ensure_fine_tuned(job)
            ctx.shared.setdefault("fine_tuned", {})[role] = summary(card)
            print(describe(card))
            loaded = load_model(replace(base, name=str(folder), gguf_file=None), cache_dir=cache_dir)
            return StatsProvider(loaded, batch_size=ctx.settings.batch_size, max_tokens=ctx.settings.max_tokens,
                                 desc=role)
        factories[role] = factory
    return factories
