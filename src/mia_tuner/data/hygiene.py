"""Data hygiene: class balance, exact duplicates, label conflicts and text lengths."""

from __future__ import annotations

import statistics
from collections import Counter

from mia_tuner.data.types import MEMBER, NON_MEMBER, MembershipSet

_CLASSES = {"member": MEMBER, "nonmember": NON_MEMBER}


def _length_stats(lengths: list[int]) -> dict:
    """mean / min / median / max of a list of lengths (None values when empty)."""
    if not lengths:
        return {"mean": None, "min": None, "median": None, "max": None}
    return {
        "mean": statistics.fmean(lengths),
        "min": min(lengths),
        "median": statistics.median(lengths),
        "max": max(lengths),
    }


def count_tokens(tokenizer, text: str) -> int:
    """Number of tokens of ``text``: a Hugging Face tokenizer (``encode``, no special tokens)
    or any callable returning a sequence of tokens."""
    if hasattr(tokenizer, "encode"):
        try:
            return len(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:
            return len(tokenizer.encode(text))
    if callable(tokenizer):
        return len(tokenizer(text))
    raise TypeError(f"tokenizer must have an encode method or be callable, got {type(tokenizer).__name__}")


def _class_texts(ms: MembershipSet) -> dict[str, list[str]]:
    """The texts of each class, in order, keyed "member" / "nonmember"."""
    return {key: [t for t, y in zip(ms.texts, ms.labels) if y == label] for key, label in _CLASSES.items()}


def hygiene_report(ms: MembershipSet, tokenizer=None) -> dict:
    """Counts that say whether a set is fit for evaluation.

    Keys: ``name``, ``n_rows``, ``n_member``, ``n_nonmember``; ``duplicates`` with the extra
    copies of identical texts within members and within non-members, the largest number of
    copies of one text, and ``in_both_classes`` (distinct texts labelled both 1 and 0, and the
    rows they occupy); ``words`` (and ``tokens`` if a tokenizer is given): mean / min / median /
    max length per class.
    """
    by_class = _class_texts(ms)
    counts = {key: Counter(texts) for key, texts in by_class.items()}
    in_both = set(counts["member"]) & set(counts["nonmember"])
    all_counts = Counter(ms.texts)
    report = {
        "name": ms.name,
        "n_rows": len(ms),
        "n_member": ms.n_member,
        "n_nonmember": ms.n_nonmember,
        "duplicates": {
            "member_extra_copies": len(by_class["member"]) - len(counts["member"]),
            "nonmember_extra_copies": len(by_class["nonmember"]) - len(counts["nonmember"]),
            "max_copies_of_one_text": max(all_counts.values(), default=0),
            "in_both_classes": len(in_both),
            "rows_in_both_classes": sum(all_counts[text] for text in in_both),
        },
        "words": {key: _length_stats([len(t.split()) for t in texts]) for key, texts in by_class.items()},
    }
    if tokenizer is not None:
        report["tokens"] = {
            key: _length_stats([count_tokens(tokenizer, t) for t in texts]) for key, texts in by_class.items()
        }
    return report


def _format_stats(stats: dict) -> str:
    """'mean 31.2, min 3, median 32, max 40' (or 'none')."""
    if stats["mean"] is None:
        return "none"
    return f"mean {stats['mean']:.1f}, min {stats['min']}, median {stats['median']:g}, max {stats['max']}"


def format_hygiene(report: dict) -> str:
    """Readable multi-line text of a :func:`hygiene_report` for the terminal."""
    dup = report["duplicates"]
    lines = [
        f"Data hygiene: {report['name']}",
        f"  rows: {report['n_rows']} ({report['n_member']} members, {report['n_nonmember']} non-members)",
        f"  exact duplicates (extra copies): {dup['member_extra_copies']} among members, "
        f"{dup['nonmember_extra_copies']} among non-members; most copies of one text: "
        f"{dup['max_copies_of_one_text']}",
        f"  texts labelled both member and non-member: {dup['in_both_classes']} "
        f"({dup['rows_in_both_classes']} rows)",
    ]
    for unit in ("words", "tokens"):
        if unit in report:
            lines.append(f"  length in {unit}:")
            lines += [f"    {key:<9} {_format_stats(report[unit][key])}" for key in _CLASSES]
    if dup["member_extra_copies"] or dup["nonmember_extra_copies"] or dup["in_both_classes"]:
        lines.append("  -> `scores`, `train` and `defend` remove these before splitting (one copy of each text "
                     "kept, texts labelled both ways dropped); deduplicate before using the set elsewhere")
    return "\n".join(lines)


def deduplicate(ms: MembershipSet) -> tuple[MembershipSet, dict]:
    """Keep the first occurrence of each (text, label); drop texts found with both labels.

    Returns the cleaned set and ``removed`` = {``duplicate_rows``: extra copies of a
    (text, label) pair removed, ``conflicting_rows``: rows whose text also appears with the
    other label (all copies removed, the label is unknown), ``conflicting_texts``: how many
    distinct texts that was}. Order of the kept rows is preserved.
    """
    labels_of: dict[str, set[int]] = {}
    for text, label in zip(ms.texts, ms.labels):
        labels_of.setdefault(text, set()).add(label)
    conflicting = {text for text, labels in labels_of.items() if len(labels) > 1}
    seen: set[tuple[str, int]] = set()
    keep, n_duplicate, n_conflicting = [], 0, 0
    for index, pair in enumerate(zip(ms.texts, ms.labels)):
        if pair[0] in conflicting:
            n_conflicting += 1
        elif pair in seen:
            n_duplicate += 1
        else:
            seen.add(pair)
            keep.append(index)
    removed = {"duplicate_rows": n_duplicate, "conflicting_rows": n_conflicting,
               "conflicting_texts": len(conflicting)}
    cleaned = ms.subset(keep)
    cleaned.info["deduplicated"] = removed
    return cleaned, removed
