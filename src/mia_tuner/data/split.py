"""The evaluation split every method shares: a balanced train part and a balanced test part."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mia_tuner.config import SplitConfig
from mia_tuner.data.hygiene import deduplicate
from mia_tuner.data.types import MEMBER, NON_MEMBER, MembershipSet
from mia_tuner.errors import DataError


@dataclass(frozen=True)
class EvaluationSplit:
    """Train part (for learned detectors), test part (for every method) and how they were made."""

    train: MembershipSet
    test: MembershipSet
    report: dict = field(default_factory=dict, compare=False)


def check_split_config(config: SplitConfig) -> None:
    """Raise a DataError for settings that cannot produce a split."""
    if not 0.0 < config.train_fraction < 1.0:
        raise DataError(f"train_fraction (--train-fraction) must be between 0 and 1 (exclusive), got {config.train_fraction}")
    if config.max_train_per_class < 0:
        raise DataError(f"max_train_per_class (--train-per-class) must be >= 0, got {config.max_train_per_class}")
    if config.max_test_per_class < 1:
        raise DataError(f"max_test_per_class (--test-per-class) must be >= 1, got {config.max_test_per_class}")
    if config.group_by not in GROUPINGS:
        raise DataError(f"group_by must be one of {', '.join(map(str, GROUPINGS))}, got {config.group_by!r}")


GROUPINGS = (None, "event")


def _grouped_order(source: MembershipSet, label: int, group_rank: dict[str, int], keys: list[str]) -> list[int]:
    """One class's indices ordered by the (shuffled) rank of their group, then by row."""
    return sorted(_class_indices(source, label).tolist(), key=lambda i: (group_rank[keys[i]], i))


def _class_orders(source: MembershipSet, config: SplitConfig, n_per_class: int) -> dict[int, list[int]]:
    """Each class's shuffled indices, cut to ``n_per_class``.

    Ungrouped: an independent permutation per class (members first). Grouped: the groups are
    shuffled once and both classes follow that order, so in a set with as many members as
    non-members per group (a paired set) the train/test cut never separates a group.
    """
    rng = np.random.default_rng(config.seed)
    if config.group_by is None:
        return {label: rng.permutation(_class_indices(source, label))[:n_per_class].tolist()
                for label in (MEMBER, NON_MEMBER)}
    from mia_tuner.data.shift import event_groups

    keys = event_groups(source.texts)
    groups = sorted(set(keys))
    group_rank = dict(zip(groups, rng.permutation(len(groups)).tolist()))
    return {label: _grouped_order(source, label, group_rank, keys)[:n_per_class]
            for label in (MEMBER, NON_MEMBER)}


def _class_indices(ms: MembershipSet, label: int) -> np.ndarray:
    """Row indices of one class, in order."""
    return np.array([i for i, y in enumerate(ms.labels) if y == label], dtype=np.int64)


def _interleave(members: list[int], nonmembers: list[int]) -> list[int]:
    """member, non-member, member, ... (the longer list's rest at the end)."""
    out = []
    for i in range(max(len(members), len(nonmembers))):
        out += [part[i] for part in (members, nonmembers) if i < len(part)]
    return out


def _check_no_overlap(ms: MembershipSet, train_idx: list[int], test_idx: list[int]) -> None:
    """Raise a DataError if an identical text is in both the train and the test part."""
    train_texts = {ms.texts[i] for i in train_idx}
    shared = [ms.texts[i] for i in test_idx if ms.texts[i] in train_texts]
    if shared:
        raise DataError(
            f"{len(set(shared))} identical text(s) would land in both train and test "
            f"(e.g. {shared[0][:60]!r}); let the split deduplicate the set (leave out --no-dedupe)"
        )


def _train_cut(n_per_class: int, config: SplitConfig) -> int:
    """How many of each class's shuffled texts go to the train side of the cut.

    ``round(n * train_fraction)``; with ``fill_test_first``, moved down so that the test part
    reaches its cap when the class is large enough for both caps (the test texts are then the
    same as with a smaller train fraction: the last ones of the shuffled order).
    """
    n_train = int(round(n_per_class * config.train_fraction))
    if config.fill_test_first and n_per_class >= config.max_train_per_class + config.max_test_per_class:
        n_train = min(n_train, n_per_class - config.max_test_per_class)
    return n_train


def make_split(ms: MembershipSet, config: SplitConfig | None = None, *, dedupe: bool = True) -> EvaluationSplit:
    """Split a set into balanced train and test parts, deterministically under ``config.seed``.

    Steps: deduplicate (:func:`mia_tuner.data.hygiene.deduplicate`) unless ``dedupe=False``;
    shuffle each class with ``numpy.random.default_rng(seed)`` (members first, then
    non-members) and keep the first n of each, n = size of the smaller class (balancing by
    random downsampling); split each class at round(n * train_fraction), or lower when
    ``fill_test_first`` and the class can fill both caps (see ``_train_cut``); keep the first
    ``max_train_per_class`` of each class's train part and the first ``max_test_per_class`` of
    its test part. The test part does not depend on ``max_train_per_class`` (few-shot runs
    share the test texts). Rows alternate member / non-member. With ``dedupe=False`` a text
    present in both parts raises a DataError.
    """
    config = config or SplitConfig()
    check_split_config(config)
    removed = {"duplicate_rows": 0, "conflicting_rows": 0, "conflicting_texts": 0}
    source = ms
    if dedupe:
        source, removed = deduplicate(ms)
    before = {"member": source.n_member, "nonmember": source.n_nonmember}
    n_per_class = min(before.values())
    n_train = _train_cut(n_per_class, config)
    if n_per_class < 2 or n_train < 1 or n_train >= n_per_class:
        raise DataError(
            f"{ms.name}: {before['member']} members and {before['nonmember']} non-members"
            f"{' after deduplication' if dedupe else ''} are too few to split with "
            f"--train-fraction {config.train_fraction} (each part needs at least one text per class)"
        )
    parts = {}
    for label, order in _class_orders(source, config, n_per_class).items():
        parts[label] = (order[:n_train][: config.max_train_per_class], order[n_train:][: config.max_test_per_class])
    train_idx = _interleave(parts[MEMBER][0], parts[NON_MEMBER][0])
    test_idx = _interleave(parts[MEMBER][1], parts[NON_MEMBER][1])
    if not dedupe:
        _check_no_overlap(source, train_idx, test_idx)
    report = {
        "name": ms.name,
        "seed": config.seed,
        "train_fraction": config.train_fraction,
        "max_train_per_class": config.max_train_per_class,
        "max_test_per_class": config.max_test_per_class,
        "fill_test_first": config.fill_test_first,
        "group_by": config.group_by,
        "dedupe": dedupe,
        "n_input": len(ms),
        "duplicates_removed": removed,
        "before_balancing": before,
        "after_balancing": {"member": n_per_class, "nonmember": n_per_class},
        "train": {"member": len(parts[MEMBER][0]), "nonmember": len(parts[NON_MEMBER][0])},
        "test": {"member": len(parts[MEMBER][1]), "nonmember": len(parts[NON_MEMBER][1])},
    }
    train = _part(source, train_idx, "train", report)
    test = _part(source, test_idx, "test", report)
    return EvaluationSplit(train=train, test=test, report=report)


def _part(source: MembershipSet, indices: list[int], role: str, report: dict) -> MembershipSet:
    """A subset named ``<set>/<role>`` whose info records the split settings."""
    part = source.subset(indices, name=f"{source.name}/{role}")
    part.info["evaluation_split"] = {"role": role, "seed": report["seed"], "train_fraction": report["train_fraction"]}
    return part


def carve_validation(train: MembershipSet, per_class: int, seed: int) -> tuple[MembershipSet, MembershipSet]:
    """Take ``per_class`` random texts of each class out of ``train`` as a validation set.

    Returns (train_rest, validation); both keep the original row order. Used for checkpoint
    selection. Each class must keep at least one training text.
    """
    if per_class < 1:
        raise DataError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in (MEMBER, NON_MEMBER):
        indices = _class_indices(train, label)
        if len(indices) <= per_class:
            kind = "members" if label == MEMBER else "non-members"
            raise DataError(
                f"{train.name}: {len(indices)} {kind} in the train part, cannot take {per_class} "
                "for validation and keep at least one for training"
            )
        chosen += rng.permutation(indices)[:per_class].tolist()
    chosen_set = set(chosen)
    rest = [i for i in range(len(train)) if i not in chosen_set]
    validation = train.subset(sorted(chosen), name=f"{train.name}/validation")
    train_rest = train.subset(rest, name=train.name)
    return train_rest, validation
