"""Train a MIA-Tuner detector: the artefact and its scores of the held-out texts.

split (the same evaluation split as ``mia-tuner scores``) -> validation carved out of the train
part -> adapter + pipeline -> Trainer (best validation epoch) -> test scores -> detector
directory. The baselines on the same texts, scored before any adapter touches the model, and
the run directory come from the suite runner (a cell's MIA-Tuner column: suite.detectors).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from accelerate import Accelerator
from accelerate.utils import set_seed

from mia_tuner.config import OutputFolders, SplitConfig
from mia_tuner.data.split import EvaluationSplit, carve_validation, make_split
from mia_tuner.data.types import MembershipSet
from mia_tuner.data.validation import drop_unscorable
from mia_tuner.errors import Interrupted
from mia_tuner.integrity import content_sha256
from mia_tuner.metrics import compute_metrics, wrong_way_warning
from mia_tuner.reports import metrics_table, table_text, with_note
from mia_tuner.training.checkpoint import Checkpoint
from mia_tuner.training.trainer import TrainHistory, Trainer, TrainerConfig
from mia_tuner.tuner.config import TunerConfig
from mia_tuner.tuner.detector import Detector, calibrate_threshold, read_detector_info, save_detector
from mia_tuner.tuner.peft_setup import count_parameters, wrap_model
from mia_tuner.tuner.pipelines import make_pipeline

log = logging.getLogger(__name__)
ROW = "mia-tuner"


@dataclass
class TrainResult:
    """What ``train_detector`` produced."""

    out_dir: Path
    detector_dir: Path
    detector: Detector
    history: TrainHistory
    scores: dict[str, np.ndarray]
    metrics: dict
    table: str
    split: EvaluationSplit
    validation: MembershipSet | None
    train_seconds: float


def _validation_part(split: EvaluationSplit, config: TunerConfig):
    """(train rest, validation or None): ``validation_per_class`` texts of each class."""
    if config.validation_per_class == 0:
        return split.train, None
    return carve_validation(split.train, config.validation_per_class, config.seed)


def _trainer_config(config: TunerConfig) -> TrainerConfig:
    return TrainerConfig(learning_rate=config.learning_rate, epochs=config.epochs,
                         batch_per_class=config.batch_per_class, grad_accum=config.grad_accum,
                         seed=config.seed, weight_decay=config.weight_decay, desc="mia-tuner")


def _evaluate(detector_model, pipeline, config, split, validation, rest) -> tuple[np.ndarray, dict, dict]:
    """Test scores, the metrics of validation and test, and the calibrated threshold."""
    test_scores = pipeline.score(detector_model, split.test.texts)
    metrics = {"test": compute_metrics(np.array(split.test.labels), test_scores).to_dict()}
    if validation is not None:
        val_scores = pipeline.score(detector_model, validation.texts)
        metrics["validation"] = compute_metrics(np.array(validation.labels), val_scores).to_dict()
        threshold = calibrate_threshold(val_scores, validation.labels, config.target_fpr,
                                        "validation non-members")
    else:  # no held-out non-members: calibrate on training ones (optimistic), and say so
        train_scores = pipeline.score(detector_model, rest.texts)
        threshold = calibrate_threshold(train_scores, rest.labels, config.target_fpr,
                                        "training non-members (no validation part)")
    return test_scores, metrics, threshold


def _checkpoint(out_dir: Path, loaded, config: TunerConfig, rest, validation, accelerator) -> Checkpoint:
    """The run's checkpoint, keyed by everything that determines the training."""
    key = content_sha256({
        "model": loaded.fingerprint, "config": config.to_dict(), "train": rest.fingerprint(),
        "validation": validation.fingerprint() if validation is not None else None,
        "processes": accelerator.num_processes})
    return Checkpoint(out_dir / "checkpoint", key)


def train_detector(loaded, data: MembershipSet, config: TunerConfig | None = None,
                   out_dir=OutputFolders.train, split_config: SplitConfig | None = None,
                   accelerator: Accelerator | None = None, on_epoch: Callable | None = None, resume: bool = True,
                   split: EvaluationSplit | None = None) -> TrainResult:
    """Train MIA-Tuner on ``loaded`` and save the detector in ``out_dir/detector``: the
    artefact and its test scores (row "mia-tuner"). The baselines beside it and the run
    directory are the suite runner's (`mia-tuner train` is a one-cell suite: suite.single).

    ``on_epoch(epoch, model, pipeline, split) -> dict`` runs after every epoch (learning curves;
    see ``Trainer``). Under several processes every one trains on its share of each batch and
    only the main one writes the detector. ``loaded.model`` gets the adapter (LoRA/IA3 modify
    its modules), so use ``result.detector`` afterwards. The training state is checkpointed
    in ``out_dir/checkpoint`` after every step: a run stopped midway continues from there when
    started again with the same settings (``resume=False`` starts afresh). ``split`` replaces
    the evaluation split made from ``data`` (a caller that made or carved its own).
    """
    config = config or TunerConfig()
    split_config = split_config or SplitConfig(max_train_per_class=config.train_per_class)
    accelerator = accelerator or Accelerator(cpu=loaded.device.type == "cpu")
    if split is None:  # texts the model cannot score refused (or skipped) before any forward pass
        data = drop_unscorable(data, loaded.tokenizer, max_tokens=loaded.max_tokens)
        split = make_split(data, split_config)
    rest, validation = _validation_part(split, config)
    out_dir = Path(out_dir)
    pipeline = make_pipeline(loaded, config)
    set_seed(config.seed)
    model = wrap_model(loaded.model, loaded.tokenizer, config)
    checkpoint = _checkpoint(out_dir, loaded, config, rest, validation, accelerator)
    if not resume and accelerator.is_main_process:
        checkpoint.clear()
    accelerator.wait_for_everyone()
    trainer = Trainer(model, pipeline.loss, pipeline.encode, _trainer_config(config),
                      score_fn=pipeline.score, accelerator=accelerator, checkpoint=checkpoint,
                      on_epoch=(lambda epoch, m: on_epoch(epoch, m, pipeline, split)) if on_epoch else None)
    history = trainer.fit(rest, validation)
    model = trainer.model
    try:
        test_scores, tuner_metrics, threshold = _evaluate(model, pipeline, config, split, validation, rest)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped after training, while scoring the test texts; the trained state is "
                          f"saved in {checkpoint.directory}: re-run the same command to finish") from None
    detector = Detector(model=model, pipeline=pipeline, threshold=threshold["value"], info={})
    detector_dir = out_dir / "detector"
    labels = np.array(split.test.labels)
    metrics = {ROW: compute_metrics(labels, test_scores)}
    warnings = [w for w in [wrong_way_warning(ROW, tuner_metrics.get("validation", {}).get("auroc"))] if w]
    if accelerator.is_main_process:
        save_detector(detector_dir, model, pipeline, loaded, config, threshold=threshold,
                      metrics=tuner_metrics, history=history.summary(),
                      parameters=count_parameters(model))
        detector.info = read_detector_info(detector_dir)
    accelerator.wait_for_everyone()
    return TrainResult(out_dir=out_dir, detector_dir=detector_dir, detector=detector,
                       history=history, scores={ROW: test_scores}, metrics=metrics,
                       table=with_note(table_text(metrics_table(metrics)), labels, warnings), split=split,
                       validation=validation, train_seconds=history.seconds)
