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

from mia_tuner.errors import DetectorError, ModelError
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
UNVERIFIED_REMEDY = (
    "re-train it (the same `mia-tuner train` command saves it again, with hashes), or, if you "
    "trust its files, pass --trust-unverified-detector (trust_unverified=True in Python) to use "
    "it without any check of its adapter")


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


def is_verifiable(info: dict) -> bool:
    """Whether ``detector.json`` records the hashes of its files and of itself (version 2 on)."""
    return isinstance(info.get("files"), dict) and isinstance(info.get("sha256"), str)


def read_detector_info(directory, trust_unverified: bool = False) -> dict:
    """The parsed, self-consistent ``detector.json`` of a detector directory.

    DetectorError (an ArtefactError) when it is absent, not valid JSON, incomplete, or its
    content does not match the hash it records (a damaged or hand-edited file), and when it
    records no hashes at all (saved before version 2, or the hashes were deleted): such a
    detector cannot be checked, so it is refused unless ``trust_unverified`` says to use it
    unchecked (with a warning that says what is skipped).
    """
    path = Path(directory) / DETECTOR_FILE
    info = read_artefact_json(path, FORMAT, "detector", REQUIRED_KEYS, error=DetectorError)
    if is_verifiable(info):
        check_self_hash(info, path, REMEDY, error=DetectorError)
    elif not trust_unverified:
        raise DetectorError(f"detector {Path(directory)} records no hashes of its files (saved by "
                            f"mia-tuner < 0.2, or its hashes were removed), so damage to its adapter "
                            f"cannot be detected and it is not used: {UNVERIFIED_REMEDY}")
    else:
        warnings.warn(f"using detector {Path(directory)} unverified (--trust-unverified-detector): "
                      "neither detector.json nor the adapter files are checked for damage or edits")
    return info


def verify_detector_files(directory, info: dict) -> None:
    """DetectorError unless every adapter file is there and matches its recorded hash (a
    detector read with ``trust_unverified`` records none: only its presence is checked)."""
    directory = Path(directory)
    if not (directory / ADAPTER_CONFIG).is_file():
        raise DetectorError(f"detector {directory} has no {ADAPTER_CONFIG}: the adapter is missing")
    if not any(p.name.startswith("adapter_model") for p in directory.iterdir()):
        raise DetectorError(f"detector {directory} has no adapter weights (adapter_model.*)")
    if is_verifiable(info):
        check_recorded_files(directory, info["files"], "detector", REMEDY, error=DetectorError)


def _attach_adapter(base_model, directory: Path):
    """peft's PeftModel of the adapter in ``directory``; any failure to read its files (cut
    short, not safetensors) is a DetectorError naming the weights file."""
    from peft import PeftModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return PeftModel.from_pretrained(base_model, str(directory), is_trainable=False)
    except Exception as error:  # noqa: BLE001 - safetensors, torch and peft raise many kinds
        weights = next(directory.glob("adapter_model*"), directory / "adapter_model.safetensors")
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise DetectorError(f"detector file {weights} cannot be read ({reason}); {REMEDY}") from error


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


def load_detector(directory, loaded_base, trust_unverified: bool = False) -> Detector:
    """The detector in ``directory`` on ``loaded_base`` (a LoadedModel of the same weights).

    Every file is checked against its recorded hash before peft reads it (so a missing
    adapter never turns into a hub request); a detector that records no hashes is refused
    unless ``trust_unverified`` (read_detector_info).

    The adapter is attached to ``loaded_base.model`` (LoRA/IA3 inject layers into it); a
    fallback chat template recorded in the config is applied to its tokenizer.
    """
    directory = Path(directory)
    info = read_detector_info(directory, trust_unverified)
    verify_detector_files(directory, info)
    check_base_model(info, loaded_base)
    config = replace(TunerConfig.from_dict(info["tuner_config"]), mode=info["mode"])
    pipeline = make_pipeline(loaded_base, config)
    _check_pipeline(info, pipeline)
    if pipeline.mode == "aligned" and _template_hash(loaded_base.tokenizer) != info.get("chat_template_sha256"):
        warnings.warn("the tokenizer's chat template differs from the one the detector was trained with")
    model = _attach_adapter(loaded_base.model, directory)
    model.eval()
    return Detector(model=model, pipeline=pipeline, threshold=float(info["threshold"]["value"]), info=info)
