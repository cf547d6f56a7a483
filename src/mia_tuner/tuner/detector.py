"""The trained detector as an artefact: a peft adapter plus ``detector.json``.

A detector directory holds the adapter (``save_pretrained``: ``adapter_config.json`` and the
adapter weights) and ``detector.json``: the pipeline (mode, prompt format, answer token ids),
the base model's name and weight fingerprint, the TunerConfig, validation and test metrics, the
decision threshold and a training summary. ``load_detector`` puts the adapter back on the same
base model, and refuses any other (different fingerprint).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mia_tuner.errors import ArtefactError, ModelError
from mia_tuner.models.loading import check_fingerprint
from mia_tuner.integrity import (check_recorded_files, check_self_hash, read_artefact_json)
from mia_tuner.metrics import threshold_for_fpr
from mia_tuner.reports import write_artefact_json
from mia_tuner.tuner.config import TunerConfig
from mia_tuner.tuner.pipelines import Pipeline, make_pipeline

DETECTOR_FILE = "detector.json"
FORMAT = "mia-tuner-detector"
VERSION = 2  # 2: detector.json records the SHA-256 of every file and of itself
REQUIRED_KEYS = ("format", "version", "mode", "pipeline", "base_model", "tuner_config", "threshold")
ADAPTER_CONFIG = "adapter_config.json"
UNCHECKED_FILES = ("README.md",)  # peft's model card: free text, never read back
REMEDY = "re-train or restore the detector"


@dataclass
class Detector:
    """A trained MIA-Tuner detector: score texts (higher = member) and decide membership."""

    model: object  # peft model in eval mode
    pipeline: Pipeline
    threshold: float
    info: dict

    def score(self, texts, batch_size: int | None = None) -> np.ndarray:
        """One score per text, higher = more likely a member."""
        return self.pipeline.score(self.model, list(texts), batch_size)

    def decide(self, texts, batch_size: int | None = None) -> np.ndarray:
        """True where ``score >= threshold`` (member)."""
        return self.score(texts, batch_size) >= self.threshold


def calibrate_threshold(scores, labels, target_fpr: float, source: str) -> dict:
    """The decision threshold keeping the FPR on these non-members at or below ``target_fpr``."""
    labels = np.asarray(labels)
    nonmember = np.asarray(scores, dtype=float)[labels == 0]
    value = threshold_for_fpr(nonmember, target_fpr)
    return {"value": value, "target_fpr": target_fpr, "source": source,
            "n_nonmember": int(nonmember.size),
            "observed_fpr": float((nonmember >= value).mean())}


def _template_hash(tokenizer) -> str | None:
    """Short hash of the tokenizer's chat template (None without one)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    return hashlib.sha256(str(template).encode("utf-8")).hexdigest()[:16]


def save_detector(out_dir, model, pipeline: Pipeline, loaded, config: TunerConfig, *,
                  threshold: dict, metrics: dict, history: dict, parameters: dict | None = None) -> Path:
    """Write the adapter and ``detector.json`` into ``out_dir`` (created); return the path.

    ``detector.json`` records the SHA-256 of every adapter file and of its own content, so
    that ``load_detector`` refuses a detector whose files were changed or damaged.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(str(out))
    write_artefact_json(out, DETECTOR_FILE, {
        "format": FORMAT, "version": VERSION, "mode": pipeline.mode,
        "pipeline": pipeline.describe(),
        "chat_template_sha256": _template_hash(loaded.tokenizer) if pipeline.mode == "aligned" else None,
        "base_model": {"name": loaded.name, "fingerprint": loaded.fingerprint},
        "tuner_config": config.to_dict(), "threshold": threshold, "metrics": metrics,
        "history": history, "parameters": parameters or {}}, UNCHECKED_FILES)
    return out


def read_detector_info(directory) -> dict:
    """The parsed, self-consistent ``detector.json`` of a detector directory.

    ArtefactError when it is absent, not valid JSON, incomplete, or its content does not
    match the hash it records (a damaged or hand-edited file).
    """
    path = Path(directory) / DETECTOR_FILE
    info = read_artefact_json(path, FORMAT, "detector", REQUIRED_KEYS)
    if info.get("version", 0) >= 2:
        check_self_hash(info, path, REMEDY)
    return info


def verify_detector_files(directory, info: dict) -> None:
    """ArtefactError unless every adapter file is there and matches its recorded hash."""
    directory = Path(directory)
    if not (directory / ADAPTER_CONFIG).is_file():
        raise ArtefactError(f"detector {directory} has no {ADAPTER_CONFIG}: the adapter is missing")
    if not any(p.name.startswith("adapter_model") for p in directory.iterdir()):
        raise ArtefactError(f"detector {directory} has no adapter weights (adapter_model.*)")
    files = info.get("files")
    if files is None:  # version 1: saved before detectors recorded their hashes
        warnings.warn(f"detector {directory} records no file hashes (saved by mia-tuner < 0.2): "
                      "its files cannot be checked")
        return
    check_recorded_files(directory, files, "detector", REMEDY)


def check_base_model(info: dict, loaded_base) -> None:
    """ModelError naming both hashes when ``loaded_base`` is not the detector's base model."""
    check_fingerprint(info["base_model"], loaded_base, "the detector",
                      "load the detector on the model it was trained on")


def _check_pipeline(info: dict, pipeline: Pipeline) -> None:
    """ModelError when the prompt format resolves to other answer tokens than in training."""
    saved = info["pipeline"]
    if pipeline.mode == "aligned" and (saved["yes_id"], saved["no_id"]) != (pipeline.yes_id, pipeline.no_id):
        raise ModelError(
            f"the chat template now gives answer ids (Yes {pipeline.yes_id}, No {pipeline.no_id}), "
            f"the detector was trained with (Yes {saved['yes_id']}, No {saved['no_id']})")


def load_detector(directory, loaded_base) -> Detector:
    """The detector in ``directory`` on ``loaded_base`` (a LoadedModel of the same weights).

    Every file is checked against its recorded hash before peft reads it (so a missing
    adapter never turns into a hub request).

    The adapter is attached to ``loaded_base.model`` (LoRA/IA3 inject layers into it); a
    fallback chat template recorded in the config is applied to its tokenizer.
    """
    from peft import PeftModel

    info = read_detector_info(directory)
    verify_detector_files(directory, info)
    check_base_model(info, loaded_base)
    config = replace(TunerConfig.from_dict(info["tuner_config"]), mode=info["mode"])
    pipeline = make_pipeline(loaded_base, config)
    _check_pipeline(info, pipeline)
    if pipeline.mode == "aligned" and _template_hash(loaded_base.tokenizer) != info.get("chat_template_sha256"):
        warnings.warn("the tokenizer's chat template differs from the one the detector was trained with")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = PeftModel.from_pretrained(loaded_base.model, str(directory), is_trainable=False)
    model.eval()
    return Detector(model=model, pipeline=pipeline, threshold=float(info["threshold"]["value"]), info=info)
