"""Named benchmark sets: one spelling per set, where it is read from, and the split the
benchmarks use for it (its recipe).

    wikimia24:32 … wikimia24:256   WikiMIA-24 (the paper's benchmark) by length; the official
                                    code's split
    wikimia:32 … wikimia:256        WikiMIA by length; the official code's split
    wikimia24:debiased              every WikiMIA-24 length pooled, cut to 32 words, deduplicated,
                                    paired by event and date-masked (data.shift.debias); an
                                    event's texts stay on one side, 60% of each class to train
    controlled:<model>[:<n>]        the controlled-membership set of an offline model (n + n
                                    passages, 250 by default): built once (injection), cached;
                                    registered by mia_tuner.training.controlled
    smoke                           30 + 30 synthetic sentences shipped in the package, labels
                                    arbitrary (no model saw either class): for checking the
                                    machinery (the `smoke` suite, the tests), never for numbers

A family registers itself with ``register_set``; ``resolve`` and ``split_recipe`` read any
name through the family of its prefix. WikiMIA(-24) come from a local copy when one is found
(``data_root``: ``$MIA_TUNER_DATA`` or the folder given, laid out as ``wikimia24/``
(``save_to_disk``) and ``wikimia/<n>.jsonl``, as ``../shared/data`` is), else from the hub
(``wjfu99/WikiMIA-24``, ``swj0419/WikiMIA``). A controlled set changes the model too: the
target is the model after injection and the natural reference the model before
(``NamedSet.model`` / ``reference``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from ..config import DataConfig
from ..errors import DataError

LENGTHS = (32, 64, 128, 256)
HUB = {"wikimia24": "wjfu99/WikiMIA-24", "wikimia": "swj0419/WikiMIA"}
DEBIASED = "debiased-pooled32"  # the split name the de-biased set is recorded under
SMOKE = "smoke"


@dataclass
class NamedSet:
    """A resolved name: the data, and the model / reference it implies (None: the user's)."""

    data: object  # MembershipSet
    dataset: str  # "wikimia24", "wikimia", "controlled"
    split: str  # as records name it: WikiMIA_length32, 32 (WikiMIA), debiased-pooled32, python-docs-64w[-600+600]
    model: str | None = None
    reference: str | None = None
    # what artefacts trained on the set (detectors) are filed under in the cache; a controlled
    # set: its folder's name, which already names the injected model and the set's settings
    artefact_id: str | None = None


@dataclass(frozen=True)
class SplitRecipe:
    """How the benchmarks split a set (the suite's dataset-entry fields; None: the suite's own)."""

    paper_split: bool | None = None
    group_by: str | None = None
    train_fraction: float | None = None
    test_per_class: int | None = None

    def fill(self, entry):
        """``entry`` (a suite DatasetEntry) with every field it leaves unset taken from here."""
        from dataclasses import replace

        unset = {f.name: getattr(self, f.name) for f in fields(self) if getattr(entry, f.name) is None}
        return replace(entry, **unset)


@dataclass(frozen=True)
class SetContext:
    """What resolving a name may need: where local copies and caches are, and whether to build."""

    root: str | Path | None = None
    cache_dir: str | Path | None = None
    device: str = "auto"
    build: bool = True


@dataclass(frozen=True)
class SetFamily:
    prefix: str  # the part before the first ":" ("smoke": the whole name)
    spelling: str  # how its names are written, for messages
    load: Callable[[str, SetContext], NamedSet]  # (the part after the prefix, context)
    recipe: Callable[[str], SplitRecipe]  # (the part after the prefix)


FAMILIES: dict[str, SetFamily] = {}


def register_set(prefix: str, spelling: str, recipe: Callable[[str], SplitRecipe] = lambda rest: SplitRecipe()):
    """Decorator: ``load(rest, context)`` resolves the names ``prefix[:rest]``."""
    def add(load):
        FAMILIES[prefix] = SetFamily(prefix, spelling, load, recipe)
        return load
    return add


def _family(name: str) -> tuple[SetFamily | None, str]:
    prefix, colon, rest = name.partition(":")
    family = FAMILIES.get(prefix)
    if family is None or bool(colon) == (prefix == SMOKE):  # "smoke" alone; the others "prefix:..."
        return None, rest
    return family, rest


def is_named(text: str | None) -> bool:
    """Whether ``text`` is a set name rather than a path or hub id."""
    if not text or Path(text).exists():
        return False
    return _family(text)[0] is not None


def spellings() -> str:
    return ", ".join(f.spelling for f in FAMILIES.values())


def resolve(name: str, *, root: str | Path | None = None, cache_dir=None, device: str = "auto",
            build: bool = True) -> NamedSet:
    """The set called ``name``; DataError for an unknown name (and, with ``build`` False, for a
    controlled set not built yet)."""
    family, rest = _family(name)
    if family is None:
        raise DataError(f"unknown set name {name!r}; named sets: {spellings()}")
    return family.load(rest, SetContext(root, cache_dir, device, build))


def split_recipe(name: str) -> SplitRecipe:
    """The split the benchmarks use for the named set (every field None for a path or hub id)."""
    if not is_named(name):
        return SplitRecipe()
    family, rest = _family(name)
    return family.recipe(rest)


# ---- WikiMIA(-24) and the smoke set -------------------------------------------------------------
def data_root(root: str | Path | None = None) -> Path | None:
    """The folder holding local copies (``root``, else ``$MIA_TUNER_DATA``), or None."""
    root = root or os.environ.get("MIA_TUNER_DATA")
    return Path(root) if root else None


def _length(dataset: str, value: str) -> int:
    if not value.isdigit() or int(value) not in LENGTHS:
        raise DataError(f"{dataset}:{value}: the length must be one of {', '.join(map(str, LENGTHS))}")
    return int(value)


def wikimia_config(dataset: str, length: int, root: str | Path | None = None) -> DataConfig:
    """Where WikiMIA(-24) of ``length`` words is read from: the local copy, else the hub."""
    split = f"WikiMIA_length{length}"
    local = data_root(root)
    if local is not None:
        path = local / dataset / (f"{length}.jsonl" if dataset == "wikimia" else "")
        if path.exists():
            return DataConfig(path=str(path), split=None if dataset == "wikimia" else split)
    return DataConfig(path=HUB[dataset], split=split)


def debiased_wikimia24(root: str | Path | None = None, words: int = 32, seed: int = 0):
    """Every WikiMIA-24 length pooled, cut to ``words`` words (shorter rows dropped),
    deduplicated, paired by event and date-masked."""
    from .hygiene import deduplicate
    from .loading import load_membership_set
    from .shift import debias
    from .types import MembershipSet

    texts, labels = [], []
    for n in LENGTHS:
        data = load_membership_set(wikimia_config("wikimia24", n, root))
        for text, label in zip(data.texts, data.labels):
            if len(text.split()) >= words:
                texts.append(" ".join(text.split()[:words]))
                labels.append(label)
    pooled, _ = deduplicate(MembershipSet(texts=texts, labels=labels, name=f"wikimia24/{DEBIASED}"))
    out = debias(pooled, mask=True, paired=True, seed=seed)
    return MembershipSet(texts=out.texts, labels=out.labels, name=f"wikimia24/{DEBIASED}", info=out.info)


def smoke_set():
    """The shipped synthetic set (``resources/smoke_set.jsonl``)."""
    from importlib import resources

    from .loading import load_membership_set

    path = resources.files("mia_tuner.resources") / "smoke_set.jsonl"
    return load_membership_set(DataConfig(path=str(path)))


def _wikimia_recipe(rest: str) -> SplitRecipe:
    if rest == "debiased":  # pooled, paired, masked: an event's twins stay together
        return SplitRecipe(group_by="event", train_fraction=0.6)
    return SplitRecipe(paper_split=True)  # the official code's split


@register_set("wikimia24", "wikimia24:<32|64|128|256>, wikimia24:debiased", _wikimia_recipe)
def _wikimia24(rest: str, context: SetContext) -> NamedSet:
    if rest == "debiased":
        return NamedSet(data=debiased_wikimia24(context.root), dataset="wikimia24", split=DEBIASED)
    return _wikimia("wikimia24", rest, context)


@register_set("wikimia", "wikimia:<32|64|128|256>", _wikimia_recipe)
def _wikimia_named(rest: str, context: SetContext) -> NamedSet:
    return _wikimia("wikimia", rest, context)


def _wikimia(dataset: str, rest: str, context: SetContext) -> NamedSet:
    from .loading import load_membership_set

    length = _length(dataset, rest)
    return NamedSet(data=load_membership_set(wikimia_config(dataset, length, context.root)), dataset=dataset,
                    split=f"WikiMIA_length{length}" if dataset == "wikimia24" else str(length))


@register_set(SMOKE, SMOKE)
def _smoke(rest: str, context: SetContext) -> NamedSet:
    return NamedSet(data=smoke_set(), dataset=SMOKE, split="shipped")
