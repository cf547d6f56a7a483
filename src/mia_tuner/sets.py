"""Named benchmark sets: one name per set, wherever the set lives.

    wikimia24:32 … wikimia24:256   WikiMIA-24 (paper's benchmark) by length
    wikimia:32 … wikimia:256        WikiMIA by length
    wikimia24:debiased              every WikiMIA-24 length pooled, cut to 32 words, deduplicated,
                                    paired by event and date-masked (data.shift.debias)
    controlled:<model>[:<n>]        the controlled-membership set of an offline model (n + n
                                    passages, 250 by default): built once (injection), cached
    smoke                           30 + 30 synthetic sentences shipped in the package, labels
                                    arbitrary (no model saw either class): for checking the
                                    machinery (the `smoke` suite, the tests), never for numbers

WikiMIA(-24) come from a local copy when one is found (``data_root``: ``$MIA_TUNER_DATA`` or
the folder given, laid out as ``wikimia24/`` (``save_to_disk``) and
``wikimia/<n>.jsonl``, as ``../shared/data`` is), else from the hub (``wjfu99/WikiMIA-24``,
``swj0419/WikiMIA``). A controlled set changes the model too: the target is the model after
injection and the natural reference the model before (``NamedSet.model`` / ``reference``).
The CLI's ``--data``, suites and the bench scripts all read names through ``resolve``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import DataConfig
from .errors import DataError

LENGTHS = (32, 64, 128, 256)
HUB = {"wikimia24": "wjfu99/WikiMIA-24", "wikimia": "swj0419/WikiMIA"}
DEBIASED = "debiased-pooled32"  # the split name the de-biased set is recorded under
CONTROLLED_SPLIT = "python-docs-64w"


@dataclass
class NamedSet:
    """A resolved name: the data, and the model / reference it implies (None: the user's)."""

    data: object  # MembershipSet
    dataset: str  # "wikimia24", "wikimia", "controlled"
    split: str  # as records name it: WikiMIA_length32, 32 (WikiMIA), debiased-pooled32, python-docs-64w[-600+600]
    model: str | None = None
    reference: str | None = None


SMOKE = "smoke"


def is_named(text: str | None) -> bool:
    """Whether ``text`` is a set name rather than a path or hub id."""
    if not text or Path(text).exists():
        return False
    if text == SMOKE:
        return True
    return text.split(":")[0] in ("wikimia24", "wikimia", "controlled") and ":" in text


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
    from .data import deduplicate, load_membership_set
    from .data.shift import debias
    from .data.types import MembershipSet

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

    from .data import load_membership_set

    path = resources.files("mia_tuner.resources") / "smoke_set.jsonl"
    return load_membership_set(DataConfig(path=str(path)))


def controlled_set(model: str, n_per_class: int | None, cache_dir, device: str = "auto",
                   build: bool = True) -> NamedSet:
    """The controlled-membership set of ``model`` (built on first use unless ``build`` is
    False: then DataError), its injected target model and the model before injection as
    reference."""
    from .data import load_membership_set
    from .demo import ensure_controlled
    from .training.controlled import DATA_FILE, MODEL_DIR, ControlledConfig

    config = ControlledConfig() if n_per_class is None else ControlledConfig(n_per_class=n_per_class)
    set_dir = ensure_controlled(model, config, cache_dir, device, build)
    split = CONTROLLED_SPLIT if n_per_class is None else f"{CONTROLLED_SPLIT}-{n_per_class}+{n_per_class}"
    data = load_membership_set(DataConfig(path=str(set_dir / DATA_FILE)))
    return NamedSet(data=data, dataset="controlled", split=split, model=str(set_dir / MODEL_DIR), reference=model)


def resolve(name: str, *, root: str | Path | None = None, cache_dir=None, device: str = "auto",
            build: bool = True) -> NamedSet:
    """The set called ``name`` (module docstring); DataError for an unknown name (and, with
    ``build`` False, for a controlled set not built yet)."""
    from .data import load_membership_set

    dataset, _, rest = name.partition(":")
    if name == SMOKE:
        return NamedSet(data=smoke_set(), dataset=SMOKE, split="shipped")
    if dataset == "controlled":
        model, _, size = rest.partition(":")
        if not model:
            raise DataError("controlled:<model>[:<n>] names an offline model, e.g. controlled:gemma-3-270m")
        if size and not size.isdigit():
            raise DataError(f"{name}: the set size must be a number of passages per class")
        from .config import default_cache_dir

        return controlled_set(model, int(size) if size else None, cache_dir or default_cache_dir(), device,
                              build)
    if dataset == "wikimia24" and rest == "debiased":
        return NamedSet(data=debiased_wikimia24(root), dataset="wikimia24", split=DEBIASED)
    if dataset in HUB:
        length = _length(dataset, rest)
        return NamedSet(data=load_membership_set(wikimia_config(dataset, length, root)), dataset=dataset,
                        split=f"WikiMIA_length{length}" if dataset == "wikimia24" else str(length))
    raise DataError(f"unknown set name {name!r}; named sets: wikimia24:<32|64|128|256>, wikimia:<n>, "
                    "wikimia24:debiased, controlled:<model>[:<n>], smoke")
