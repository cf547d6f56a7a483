"""A cell's MIA-Tuner column: the detector trained once, filed in the cache by what made it.

A detector's folder, ``<cache>/detectors/<set>-<key>``, is keyed by the set (its texts and
target model), the split and every tuner setting, so the demo, a suite and a later run into
another output folder share one training. Its test scores go into the score cache under the
hash of its ``detector.json``. A folder holding a finished detector is read, its files checked
against the hashes it records, and never trained again; a training stopped midway continues
from its checkpoint there (``train_detector``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from pathlib import Path

import numpy as np

from ..data.types import text_hash
from ..integrity import content_sha256, file_sha256
from ..reports import safe_filename
from .store import artefact_stamp

log = logging.getLogger(__name__)


def detector_folder(run, tuner_config) -> Path:
    """Where ``run``'s cell keeps the detector of ``tuner_config`` (in the cache)."""
    named = run.resolved.artefact_id
    identity = named or {"model": run.resolved.target, "data": run.data_digest}
    prefix = named or f"{safe_filename(run.cell.model)[:40]}__{safe_filename(run.resolved.label)[:40]}"
    key = {"set": identity, "split": vars(run.split_config), "tuner": tuner_config.to_dict()}
    if run.loading:  # trained at another precision: another detector (float32 keys as before)
        key["loading"] = run.loading
    return Path(run.cache_dir) / "detectors" / f"{prefix}-{content_sha256(key)[:12]}"


def tuner_column(run, variant) -> dict:
    """The fields of the record of MIA-Tuner ``variant`` on ``run``'s cell: its test scores and
    what the detector says of itself (mode, training history, validation AUROC)."""
    config = variant.config(run.cell.train_per_class, run.cell.seed)
    started = time.perf_counter()
    if run.cell.artefact_dir:  # a command's folder: resumed from its checkpoint, never read as it is
        folder = Path(run.cell.artefact_dir)
        scores, info, trained = train_and_score(run, config, folder, variant.column)
    else:  # filed in the cache by what made it: a finished one is read, one run trains it at a time
        folder = detector_folder(run, config)
        # under several processes every rank trains together (a lock per rank would deadlock them)
        with held(folder) if run.shard is None else contextlib.nullcontext():
            found = None if run.cell.retrain else saved_detector_scores(run, folder, config)
            scores, info, trained = found or train_and_score(run, config, folder, variant.column)
    validation = (info.get("metrics") or {}).get("validation", {}).get("auroc")
    saved = folder / "detector"
    record = {"kind": "method", "method": variant.column, "scores": scores, "mode": info["mode"],
              "config": config.to_dict(), "history": info["history"], "validation_auroc": validation,
              "threshold": info["threshold"], "detector": str(saved), "seconds": time.perf_counter() - started,
              **trained}
    if run.cell.artefact_dir:  # the command's detector: its record holds only while the detector does
        from ..tuner.detector import DETECTOR_FILE

        record.update(artefact_stamp(saved / DETECTOR_FILE))
    return record


@contextlib.contextmanager
def held(folder: Path):
    """An exclusive lock on ``folder`` (two runs of the same cell: the second waits, then reads
    the detector the first trained)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run that trains the detector in {folder} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _test_texts(run) -> list[str]:
    return list(run.split.test.texts)


def _cache_settings(saved: Path) -> dict:
    """What the score cache files a detector's scores under: the hash of its detector.json."""
    from ..tuner.detector import DETECTOR_FILE

    return {"detector": file_sha256(saved / DETECTOR_FILE)}


def saved_detector_scores(run, folder: Path, config) -> tuple[np.ndarray, dict, dict] | None:
    """(test scores, detector.json, {}) of a finished detector in ``folder`` (None when there
    is none, or when it was trained on other weights than the cell's target, e.g. a controlled
    set built again): its files checked first, its scores read from the score cache, else
    computed by the detector on the target."""
    from ..run import open_cache
    from ..tuner.api import ROW
    from ..tuner.detector import DETECTOR_FILE, load_detector, read_detector_info, verify_detector_files

    saved = folder / "detector"
    if not (saved / DETECTOR_FILE).is_file():
        return None
    info = read_detector_info(saved)
    verify_detector_files(saved, info)
    texts, model_key = _test_texts(run), info["base_model"]["fingerprint"]
    if model_key != run.describe()["fingerprint"] or info["tuner_config"] != config.to_dict():
        log.warning("the detector in %s was trained on other weights or settings: trained again", saved)
        return None
    with open_cache(run.run_config()) as cache:
        found = cache.get(model_key, ROW, _cache_settings(saved), texts)
        scores = [found.get(text_hash(t)) for t in texts]
        if any(s is None for s in scores):
            log.info("scoring the test texts with the saved detector %s", saved)
            scores = load_detector(saved, run.hand_over()).score(texts)  # the adapter changes its modules
            if run.writer:
                cache.put(model_key, ROW, _cache_settings(saved), texts, scores)
    return np.asarray(scores, dtype=float), info, {}


def train_and_score(run, config, folder: Path, column: str) -> tuple[np.ndarray, dict, dict]:
    """Train on the cell's training part (checkpointed in ``folder``; afresh when the cell says
    ``retrain``): (test scores, detector.json, what only this training knows: its step log,
    seconds and validation part), the scores kept in the score cache under the detector's hash."""
    from ..run import open_cache
    from ..tuner.api import ROW, train_detector
    from ..tuner.detector import read_detector_info

    print(f"Training MIA-Tuner ({column}) on the split's training part in {folder} ...")
    result = train_detector(run.hand_over(), run.resolved.data, config, out_dir=folder,
                            split_config=run.split_config, split=run.split, resume=not run.cell.retrain)
    saved = result.detector_dir
    info = read_detector_info(saved)
    if run.writer:
        with open_cache(run.run_config()) as cache:
            cache.put(info["base_model"]["fingerprint"], ROW, _cache_settings(saved), _test_texts(run),
                      result.scores[ROW])
    validation = result.validation
    trained = {"steps": result.history.steps, "train_seconds": result.history.seconds,
               "validation": None if validation is None else
               {"member": validation.n_member, "nonmember": validation.n_nonmember}}
    return np.asarray(result.scores[ROW], dtype=float), info, trained
