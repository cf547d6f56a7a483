"""Train a MIA-Tuner detector end to end and compare it with every baseline on the same texts.

split (the same evaluation split as ``mia-tuner scores``) -> validation carved out of the train
part -> baselines on the test part (before any adapter touches the model) -> adapter +
pipeline -> Trainer (best validation epoch) -> test scores -> detector directory -> one run
directory with every row (MIA-Tuner's is "mia-tuner").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from accelerate import Accelerator
from accelerate.utils import set_seed

from mia_tuner.config import MethodConfig, ModelConfig, RunConfig, SplitConfig
from mia_tuner.data.split import EvaluationSplit, carve_validation, make_split
from mia_tuner.data.types import MembershipSet
from mia_tuner.data.validation import drop_unscorable
from mia_tuner.errors import Interrupted
from mia_tuner.integrity import content_sha256
from mia_tuner.metrics import compute_metrics, wrong_way_warning
from mia_tuner.reports import metrics_table, table_text, with_note, write_run
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


def _run_config(loaded, config: TunerConfig, split_config: SplitConfig, out_dir, reference,
                cache_dir, methods: MethodConfig | None, model_config: ModelConfig | None) -> RunConfig:
    """A RunConfig for the baselines on the same split, with the settings of `mia-tuner scores`
    (so their scores are shared through the cache with plain scoring runs; texts are cut at the
    model's context, where MIA-Tuner cuts them at ``config.max_tokens``). The reference model
    is loaded as ``model_config`` says (device, dtype, quantization), under its own name."""
    model = model_config or ModelConfig(name=loaded.name, device=loaded.device.type)
    return RunConfig.compose(model, split=split_config, methods=methods or MethodConfig(batch_size=config.batch_size),
                             reference=reference, out=out_dir, cache_dir=cache_dir)


def score_baselines(run_config: RunConfig, loaded, split: EvaluationSplit) -> tuple[dict, dict]:
    """Every selected score-based method (and blind) on the test part, via run.score_split."""
    from mia_tuner.run import score_split, select_methods

    scores, info, _ = score_split(run_config, loaded, split, select_methods(run_config, bool(loaded.defence)))
    return scores, info


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
                   out_dir="runs/mia-tuner", split_config: SplitConfig | None = None,
                   compare_methods: bool = True, reference: str | None = None, cache_dir=None,
                   methods: MethodConfig | None = None,
                   accelerator: Accelerator | None = None,
                   on_epoch: Callable | None = None, resume: bool = True,
                   model_config: ModelConfig | None = None,
                   split: EvaluationSplit | None = None) -> TrainResult:
    """Train MIA-Tuner on ``loaded`` and write ``out_dir`` (run files) + ``out_dir/detector``.

    ``methods`` selects and configures the baselines (default: all, with the settings of
    `mia-tuner scores`); ``reference`` is the model for ``ref``, loaded with the device, dtype
    and quantization of ``model_config`` (the configuration ``loaded`` came from). ``on_epoch(epoch, model,
    pipeline, split) -> dict`` runs after every epoch (learning curves; see ``Trainer``).
    Under several processes only the main one scores the baselines and writes files.
    ``loaded.model`` gets the adapter (LoRA/IA3 modify its modules), so use
    ``result.detector`` afterwards. The training state is checkpointed in
    ``out_dir/checkpoint`` after every step: a run stopped midway continues from there when
    started again with the same settings (``resume=False`` starts afresh). ``split`` replaces
    the evaluation split made from ``data`` (a caller that carved its own parts: safeguards).
    """
    config = config or TunerConfig()
    split_config = split_config or SplitConfig(max_train_per_class=config.train_per_class)
    accelerator = accelerator or Accelerator(cpu=loaded.device.type == "cpu")
    if split is None:  # texts the model cannot score refused (or skipped) before any forward pass
        data = drop_unscorable(data, loaded.tokenizer, max_tokens=loaded.max_tokens)
        split = make_split(data, split_config)
    rest, validation = _validation_part(split, config)
    out_dir = Path(out_dir)
    run_config = _run_config(loaded, config, split_config, out_dir, reference, cache_dir, methods,
                             model_config)
    scores, info = {}, {}
    if compare_methods and accelerator.is_main_process:
        scores, info = score_baselines(run_config, loaded, split)
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
    scores = {ROW: test_scores, **scores}
    labels = np.array(split.test.labels)
    metrics = {name: compute_metrics(labels, s) for name, s in scores.items()}
    warnings = [w for w in [wrong_way_warning(ROW, tuner_metrics.get("validation", {}).get("auroc"))] if w]
    if accelerator.is_main_process:
        save_detector(detector_dir, model, pipeline, loaded, config, threshold=threshold,
                      metrics=tuner_metrics, history=history.summary(),
                      parameters=count_parameters(model))
        extra = {"model": {"name": loaded.name, "fingerprint": loaded.fingerprint,
                           "device": str(loaded.device)},
                 "data": {"name": data.name, **data.info}, "split": split.report,
                 "validation": {"member": validation.n_member, "nonmember": validation.n_nonmember}
                 if validation is not None else None,
                 "methods": info, "train_seconds": history.seconds, "history": history.to_dict(),
                 "detector": str(detector_dir), "threshold": threshold}
        write_run(out_dir, config={"tuner": config.to_dict(), "run": run_config.to_dict()},
                  texts=list(split.test.texts), labels=labels, scores=scores, metrics=metrics,
                  extra=extra, warnings=warnings)
        detector.info = read_detector_info(detector_dir)
    accelerator.wait_for_everyone()
    return TrainResult(out_dir=out_dir, detector_dir=detector_dir, detector=detector,
                       history=history, scores=scores, metrics=metrics,
                       table=with_note(table_text(metrics_table(metrics)), labels, warnings), split=split,
                       validation=validation, train_seconds=history.seconds)
