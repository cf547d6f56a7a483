"""Train a defence with the shared trainer and write it as an artefact.

Checkpoint selection: after each epoch the defended model scores the validation texts with
the statistic the defence hides (``DefencePipeline.score``), and its mean KL from the original
model on the validation non-members is measured; the epoch whose AUROC is closest to 0.5 is
kept (the untrained state is not a candidate: it is no defence). With ``selection_max_kl``,
only among the epochs whose KL is within that bound (none within it: the lowest KL), so
that the kept defence is not the one that hides members by moving the whole model. The run
resumes from its checkpoint after a kill, like MIA-Tuner's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed

from mia_tuner.data.types import MembershipSet
from mia_tuner.integrity import content_sha256
from mia_tuner.training.checkpoint import Checkpoint
from mia_tuner.training.trainer import TrainHistory, Trainer, TrainerConfig
from mia_tuner.tuner.config import TunerConfig
from mia_tuner.tuner.peft_setup import wrap_model
from mia_tuner.safeguards.artefact import initial_prompt, save_defence
from mia_tuner.safeguards.config import DefenceConfig
from mia_tuner.safeguards.defended import DefendedModel
from mia_tuner.safeguards.objective import DefencePipeline


log = logging.getLogger(__name__)
ATTACKER_ONLY = ("attack_epochs",)
VALIDATION_KL = "validation_kl"


def trainable_defence(loaded, config: DefenceConfig):
    """The model to train: ``loaded.model`` behind a trainable defensive prompt, or with a
    trainable LoRA adapter (injected into ``loaded.model``'s modules); nothing else trains."""
    if config.peft == "prompt":
        for parameter in loaded.model.parameters():
            parameter.requires_grad_(False)
        return DefendedModel(loaded.model, initial_prompt(loaded, config))
    return wrap_model(loaded.model, loaded.tokenizer, TunerConfig(peft="lora", lora_rank=config.lora_rank))


def training_settings(config: DefenceConfig) -> dict:
    """The settings in a defence's training key: the attacker's settings do not change the
    defence, and later fields at their defaults are left out (older defences' keys stay valid)."""
    return {k: v for k, v in config.key_dict().items() if k not in ATTACKER_ONLY}


def _trainer_config(config: DefenceConfig) -> TrainerConfig:
    bounded = config.selection_max_kl is not None
    return TrainerConfig(learning_rate=config.learning_rate, epochs=config.epochs,
                         batch_per_class=config.batch_per_class, seed=config.seed,
                         weight_decay=config.weight_decay, objective="chance",
                         initial_candidate=False, desc="defence",
                         bound_key=VALIDATION_KL if bounded else None, bound_max=config.selection_max_kl)


def _validation_kl_hook(pipeline: DefencePipeline, validation: MembershipSet | None):
    """The trainer's ``on_epoch``: the epoch's mean KL on the validation non-members."""
    if validation is None or not validation.n_nonmember:
        return None
    texts = [t for t, label in zip(validation.texts, validation.labels) if label == 0]
    return lambda epoch, model: {VALIDATION_KL: pipeline.mean_kl(model, texts)}


def train_defence(loaded, train: MembershipSet, validation: MembershipSet | None, config: DefenceConfig,
                  out_dir, *, accelerator: Accelerator | None = None, resume: bool = True):
    """Train the defence on ``train`` (members and non-members), save it to ``out_dir`` and
    return (the trained model, whose defence ``defended.undefended`` can switch off;
    the TrainHistory). A LoRA defence stays unmerged here: ``apply_defence`` merges it."""
    out = Path(out_dir)
    pipeline = DefencePipeline(loaded.tokenizer, config)
    key = content_sha256({"model": loaded.fingerprint, "config": training_settings(config),
                          "train": train.fingerprint(),
                          "validation": validation.fingerprint() if validation is not None else None})
    finished = _finished(out, key, loaded) if resume else None
    if finished is not None:  # the same defence was trained and saved before: load it
        return finished
    accelerator = accelerator or Accelerator(cpu=loaded.device.type == "cpu")
    set_seed(config.seed)
    model = trainable_defence(loaded, config)
    if config.member_term == "shift":
        log.info("members' advantage to remove: %.4f nats per token", pipeline.measure_member_shift(model, train))
    checkpoint = Checkpoint(out / "checkpoint", key)
    if not resume and accelerator.is_main_process:
        checkpoint.clear()
    accelerator.wait_for_everyone()
    trainer = Trainer(model, pipeline.loss, pipeline.encode, _trainer_config(config), score_fn=pipeline.score,
                      accelerator=accelerator, checkpoint=checkpoint,
                      on_epoch=_validation_kl_hook(pipeline, validation))
    history: TrainHistory = trainer.fit(train, validation)
    parts = [train] + ([validation] if validation is not None else [])
    if accelerator.is_main_process:  # every process holds the same trained state; one writes it
        save_defence(out, trainer.model, loaded, config, trained_on=parts, history=history.to_dict(), key=key,
                     member_shift=pipeline.member_shift)
        checkpoint.clear()
    accelerator.wait_for_everyone()
    return trainer.model, history


def _finished(out: Path, key: str, loaded):
    """(model, history) of a defence already saved in ``out`` under ``key``, else None. The
    model is rebuilt from the checked artefact exactly as trained (LoRA unmerged)."""
    from mia_tuner.safeguards.artefact import DEFENCE_FILE, read_defence_info, trained_model

    if not (out / DEFENCE_FILE).is_file():
        return None
    info = read_defence_info(out)
    if info.get("training_key") != key:
        return None
    return trained_model(out, info, loaded), TrainHistory(**info["history"])
