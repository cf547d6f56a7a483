"""A trained defence as an artefact: the defensive prompt (or LoRA adapter) plus ``defence.json``.

``defence.json`` records what the defence is against, its settings, the base model's name and
weight fingerprint, the SHA-256 of every text it was trained on (so that an evaluation can
prove its held-out texts are held out), the SHA-256 of every file and of itself.
``apply_defence`` refuses a damaged directory or another base model.

How a defence is applied is how a publisher would release it: a defensive prompt wraps the
model (``DefendedModel``, an API that prepends it to every request); a LoRA defence is merged
into the weights (``merge_and_unload``: a plain model that is the weights released).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mia_tuner.models.loading import check_fingerprint
from mia_tuner.integrity import (check_recorded_files, check_self_hash, read_artefact_json)
from mia_tuner.reports import write_artefact_json
from mia_tuner.safeguards.config import DefenceConfig
from mia_tuner.safeguards.defended import DefendedModel, defended

DEFENCE_FILE = "defence.json"
PROMPT_FILE = "defence_prompt.safetensors"
FORMAT = "mia-tuner-defence"
VERSION = 1
REQUIRED = ("format", "version", "against", "peft", "base_model", "config", "trained_on", "files", "sha256")
UNCHECKED_FILES = ("README.md",)  # peft's model card
REMEDY = "re-train or restore the defence"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_defence(out_dir, model, loaded, config: DefenceConfig, *, trained_on, history: dict,
                 key: str | None = None, member_shift: float | None = None) -> Path:
    """Write the defence in ``model`` (a ``DefendedModel`` or a LoRA peft model) to ``out_dir``.

    ``trained_on`` is the MembershipSet(s) the defence saw (training and validation texts);
    ``key`` identifies the training run (a re-run with the same key loads instead of training);
    ``member_shift`` is the δ a ``member_term="shift"`` defence raised members' losses by."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, DefendedModel):
        save_file({"prompt": model.prompt.detach().float().cpu().contiguous()}, str(out / PROMPT_FILE))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save_pretrained(str(out))
    write_artefact_json(out, DEFENCE_FILE, {
        "format": FORMAT, "version": VERSION, "against": config.against, "peft": config.peft,
        "base_model": {"name": loaded.name, "fingerprint": loaded.fingerprint},
        "config": config.to_dict(), "history": history, "training_key": key, "member_shift": member_shift,
        "trained_on": sorted({text_sha256(t) for part in trained_on for t in part.texts})}, UNCHECKED_FILES)
    return out


def read_defence_info(directory) -> dict:
    """The checked ``defence.json`` of ``directory``: ArtefactError when absent, damaged,
    incomplete, edited after saving, or when a file it records is missing or changed."""
    directory = Path(directory)
    path = directory / DEFENCE_FILE
    info = read_artefact_json(path, FORMAT, "defence", REQUIRED)
    check_self_hash(info, path, REMEDY)
    check_recorded_files(directory, info["files"], "defence", REMEDY)
    return info


def check_defence_base(info: dict, loaded) -> None:
    """ModelError naming both fingerprints when ``loaded`` is not the defence's base model."""
    check_fingerprint(info["base_model"], loaded, "the defence",
                      "apply a defence only to the model it was trained for")


def defended_fingerprint(info: dict) -> str:
    """The defended model's cache identity: base fingerprint + the defence's own hash."""
    return f"{info['base_model']['fingerprint']}+defence-{info['sha256'][:16]}"


def apply_defence(directory, loaded):
    """``loaded`` (a LoadedModel of the defence's base model) with the defence applied, as a
    LoadedModel with its own fingerprint. A LoRA defence is merged into ``loaded.model``'s
    weights (reload the model to undo it); a defensive prompt leaves them untouched."""
    info = read_defence_info(directory)
    check_defence_base(info, loaded)
    fingerprint = defended_fingerprint(info)
    if info["peft"] == "prompt":
        return replace(defended(loaded, _prompt(directory), fingerprint), defence=info["sha256"])
    merged = trained_model(directory, info, loaded).merge_and_unload()
    merged.eval()
    return replace(loaded, model=merged, fingerprint=fingerprint, defence=info["sha256"])


def _prompt(directory) -> torch.Tensor:
    return load_file(str(Path(directory) / PROMPT_FILE))["prompt"]


def trained_model(directory, info: dict, loaded):
    """The defence of a checked ``directory`` on ``loaded.model`` as it was trained: a
    ``DefendedModel``, or a peft model with the LoRA adapter unmerged (``defended.undefended``
    can switch either off)."""
    if info["peft"] == "prompt":
        return DefendedModel(loaded.model, _prompt(directory)).eval()
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return PeftModel.from_pretrained(loaded.model, str(directory), is_trainable=False).eval()


def initial_prompt(loaded, config: DefenceConfig) -> torch.Tensor:
    """The defensive prompt's start: the embeddings of ``config.init_text``, tiled (peft's TEXT
    initialisation rule)."""
    from mia_tuner.tuner.peft_setup import init_text_ids

    ids = init_text_ids(loaded.tokenizer, config.init_text, config.num_virtual_tokens)
    embed = loaded.model.get_input_embeddings()
    with torch.no_grad():
        return embed(torch.tensor(ids, device=embed.weight.device)).detach().clone()
