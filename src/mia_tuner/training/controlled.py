"""Controlled membership: ground truth that can be trusted.

Texts of one kind are split at random into members and non-members; the target model is then
trained further on the members only. The labels are exact and the split is IID, so a
model-free classifier sits at chance and whatever a detector gains comes from the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import ClassVar
from pathlib import Path

import numpy as np

from ..config import DEFAULT_SEED, DataConfig, option
from ..data.registry import NamedSet, SetContext, SplitRecipe, register_set
from ..data.types import MEMBER, NON_MEMBER, MembershipSet
from ..errors import DataError

log = logging.getLogger(__name__)

DATA_FILE = "data.jsonl"
CARD_FILE = "card.json"
MODEL_DIR = "model"
CONTROLLED_SPLIT = "python-docs-64w"  # the split name records give the default-corpus sets
# the default set's split: 60% of each class on the train side (of 250: 80 used, the rest for
# validation), 40% (100 + 100) held out; the demo's and the named set's recipe
DEFAULT_TRAIN_FRACTION = 0.6


@dataclass
class ControlledConfig:
    """How a controlled-membership set is built (its defaults' reasons: docs/history.md, "The
    offline default")."""

    VALUES: ClassVar[dict] = {"n_per_class": "positive", "n_words": "positive", "seed": "seed"}

    corpus: str = option("python-docs", "python-docs (offline default) or a .txt/.jsonl file of documents")
    n_words: int = option(64, "words per passage")
    n_per_class: int = option(250, "members (= non-members) in the set")
    seed: int = option(DEFAULT_SEED, "seed of the passages' choice, the member/non-member draw and the injection")
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


# ---- the built sets in the cache, and their names (controlled:<model>[:<n>]) -----------------------
def controlled_dir(model: str, config: ControlledConfig, cache_dir: str | Path) -> Path:
    """Cache folder of a controlled set, keyed by the model and every build setting."""
    key = hashlib.sha256(json.dumps([model, config.resolved()], sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / "controlled" / f"{model.replace('/', '_')}-{key[:12]}"


def ensure_controlled(model: str, config: ControlledConfig, cache_dir: str | Path,
                      device: str = "auto", build: bool = True) -> Path:
    """The built set's folder, built first if needed (DataError instead when ``build`` is False);
    its files checked against its card."""
    out = controlled_dir(model, config, cache_dir)
    if not is_built(out) and not build:
        raise DataError(f"the controlled-membership set of {model} is not built yet ({out})")
    if not is_built(out):
        print(f"Building the controlled-membership set in {out} (first run only) ...")
        build_controlled(model, out, config, device=device, cache_dir=cache_dir)
    check_built(out)
    return out


def controlled_set(model: str, n_per_class: int | None, cache_dir, device: str = "auto",
                   build: bool = True) -> NamedSet:
    """The controlled-membership set of ``model`` (built on first use unless ``build`` is
    False: then DataError), its injected target model and the model before injection as
    reference."""
    from ..data import load_membership_set

    config = ControlledConfig() if n_per_class is None else ControlledConfig(n_per_class=n_per_class)
    set_dir = ensure_controlled(model, config, cache_dir, device, build)
    split = CONTROLLED_SPLIT if n_per_class is None else f"{CONTROLLED_SPLIT}-{n_per_class}+{n_per_class}"
    data = load_membership_set(DataConfig(path=str(set_dir / DATA_FILE)))
    return NamedSet(data=data, dataset="controlled", split=split, model=str(set_dir / MODEL_DIR), reference=model,
                    artefact_id=set_dir.name)


def _parse_name(rest: str) -> tuple[str, int | None]:
    model, _, size = rest.partition(":")
    if not model:
        raise DataError("controlled:<model>[:<n>] names an offline model, e.g. controlled:gemma-3-270m")
    if model.isdigit():  # one spelling: the model is always named ("controlled:{model}:600" in a suite)
        raise DataError(f"controlled:{rest}: name the model first, controlled:<model>:{model} "
                        f"(controlled:{{model}}:{model} in a suite or a bench script)")
    if size and not size.isdigit():
        raise DataError(f"controlled:{rest}: the set size must be a number of passages per class")
    return model, int(size) if size else None


def _controlled_recipe(rest: str) -> SplitRecipe:
    """The default set: 60% of each class on the train side (80 of them used), 100 + 100 test
    (the demo's split); a set of n + n: a third of each class to test (200 + 200 of 600)."""
    _, size = _parse_name(rest)
    return SplitRecipe(train_fraction=DEFAULT_TRAIN_FRACTION) if size is None else SplitRecipe(test_per_class=size // 3)


@register_set("controlled", "controlled:<model>[:<n>]", _controlled_recipe)
def _controlled_named(rest: str, context: SetContext) -> NamedSet:
    from ..config import default_cache_dir

    model, size = _parse_name(rest)
    return controlled_set(model, size, context.cache_dir or default_cache_dir(), context.device, context.build)
