"""Controlled membership: ground truth that can be trusted.

Texts of one kind are split at random into members and non-members; the target model is then
trained further on the members only. The labels are exact and the split is IID, so a
model-free classifier sits at chance and whatever a detector gains comes from the model.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..config import option
from ..errors import DataError
from ..data.types import MEMBER, NON_MEMBER, MembershipSet

log = logging.getLogger(__name__)

DATA_FILE = "data.jsonl"
CARD_FILE = "card.json"
MODEL_DIR = "model"


@dataclass
class ControlledConfig:
    """How a controlled-membership set is built (its defaults' reasons: BENCHMARKS.md, "The
    offline default")."""

    corpus: str = option("python-docs", "python-docs (offline default) or a .txt/.jsonl file of documents")
    n_words: int = option(64, "words per passage")
    n_per_class: int = option(250, "members (= non-members) in the set")
    seed: int = option(42, "seed of the passages' choice, the member/non-member draw and the injection")
    injection: dict = field(default_factory=dict, metadata={"help": "InjectionConfig fields (epochs, "
                            "learning_rate, batch_size, max_tokens, method, lora_rank): the defaults otherwise"})

    def injection_config(self):
        from .injection import InjectionConfig

        return InjectionConfig(**{"seed": self.seed, **self.injection})

    def resolved(self) -> dict:
        """Every setting, injection defaults included (what a cached set is keyed by)."""
        return {**asdict(self), "injection": asdict(self.injection_config())}


def corpus_passages(config: ControlledConfig) -> list[str]:
    from ..data.corpus import load_corpus, python_docs_corpus

    if config.corpus == "python-docs":
        return python_docs_corpus(n_words=config.n_words)
    return load_corpus(config.corpus, n_words=config.n_words)


def random_membership(passages: list[str], n_per_class: int, seed: int) -> MembershipSet:
    """Draw 2 * n_per_class distinct passages and label half of them members, at random."""
    distinct = list(dict.fromkeys(passages))
    if len(distinct) < 2 * n_per_class:
        raise DataError(f"the corpus has {len(distinct)} distinct passages; "
                        f"{2 * n_per_class} are needed for {n_per_class} per class")
    rng = np.random.default_rng(seed)
    chosen = [distinct[i] for i in rng.permutation(len(distinct))[: 2 * n_per_class]]
    labels = [MEMBER] * n_per_class + [NON_MEMBER] * n_per_class
    return MembershipSet(texts=chosen, labels=labels, name="controlled")


def build_controlled(model_name: str, out_dir: str | Path, config: ControlledConfig,
                     *, device: str = "auto", cache_dir: str | Path | None = None) -> Path:
    """Build the labelled set, inject the members into the model, save both under out_dir.

    The injection is checkpointed in ``out_dir/.injection-checkpoint``: a build stopped midway
    continues from its last saved state when run again with the same settings.
    """
    from ..config import ModelConfig
    from ..integrity import content_sha256
    from ..models import load_model
    from .checkpoint import Checkpoint
    from .injection import continue_pretraining

    out = Path(out_dir)
    started = time.perf_counter()
    labelled = random_membership(corpus_passages(config), config.n_per_class, config.seed)
    loaded = load_model(ModelConfig(name=model_name, device=device), cache_dir=cache_dir)
    members = [t for t, y in zip(labelled.texts, labelled.labels) if y == MEMBER]
    injection = config.injection_config()
    checkpoint = Checkpoint(out / ".injection-checkpoint", content_sha256(
        {"model": loaded.fingerprint, "config": config.resolved(), "set": labelled.fingerprint()}))
    result = continue_pretraining(loaded.model, loaded.tokenizer, members, injection,
                                  checkpoint=checkpoint)
    model_dir = out / MODEL_DIR
    result["model"].save_pretrained(model_dir, safe_serialization=True)
    loaded.tokenizer.save_pretrained(model_dir)
    write_jsonl(out / DATA_FILE, labelled)
    card = {
        "base_model": model_name, "base_fingerprint": loaded.fingerprint,
        "config": asdict(config), "injection": asdict(injection),
        "n_member": labelled.n_member, "n_nonmember": labelled.n_nonmember,
        "train_steps": result["steps"], "train_seconds": round(result["seconds"], 1),
        "first_loss": result["first_loss"], "last_epoch_loss": result["last_epoch_loss"],
        "build_seconds": round(time.perf_counter() - started, 1),
        "built": time.strftime("%Y-%m-%d %H:%M:%S"),
        "files": set_file_records(out),
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=2))  # written last: marks completion
    checkpoint.clear()
    return out


def is_built(out_dir: str | Path) -> bool:
    return (Path(out_dir) / CARD_FILE).exists()


def set_file_records(out: Path) -> dict:
    """Hash records of the labelled texts and of every file of the injected model."""
    from ..integrity import file_records

    records = {DATA_FILE: file_records(out)[DATA_FILE]}
    records.update({f"{MODEL_DIR}/{name}": r for name, r in file_records(out / MODEL_DIR).items()})
    return records


def check_built(out_dir: str | Path) -> None:
    """ArtefactError when a built set's texts or model differ from what its card recorded."""
    from ..errors import ArtefactError
    from ..integrity import changed_files

    out = Path(out_dir)
    card = json.loads((out / CARD_FILE).read_text("utf-8"))
    problems = changed_files(out, card.get("files", {}))
    if problems:
        raise ArtefactError(f"the controlled set {out} is damaged ({'; '.join(problems)}); "
                            "delete the folder to build it again")


def write_jsonl(path: Path, ms: MembershipSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for text, label in zip(ms.texts, ms.labels):
            handle.write(json.dumps({"input": text, "label": label}, ensure_ascii=False) + "\n")
