"""Checks that texts and labels form a usable member/non-member set."""

from __future__ import annotations

import math
import numbers

from mia_tuner.errors import DataError

# Why a row can be rejected, in the order the checks run (a row counts under its first problem).
NON_STRING_TEXT = "non_string_text"
EMPTY_TEXT = "empty_text"
INVALID_LABEL = "invalid_label"
REASONS = (NON_STRING_TEXT, EMPTY_TEXT, INVALID_LABEL)

_DESCRIPTIONS = {
    NON_STRING_TEXT: "a text that is missing or not a string",
    EMPTY_TEXT: "an empty or whitespace-only text",
    INVALID_LABEL: "a label that is not 0 or 1",
}
_SHOWN_ROWS = 5


def normalize_label(value) -> int | None:
    """Return 0 or 1 for a valid label, None otherwise.

    Valid labels are ints, bools and floats (numpy numbers included) equal to 0 or 1.
    Strings such as "1" are *not* labels: file readers that only know strings (CSV) convert
    them before validation.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, str):
        number = float(value)
        if math.isfinite(number) and number in (0.0, 1.0):
            return int(number)
    return None


def text_problem(text) -> str | None:
    """NON_STRING_TEXT, EMPTY_TEXT or None for a usable text."""
    if not isinstance(text, str):
        return NON_STRING_TEXT
    if not text.strip():
        return EMPTY_TEXT
    return None


def row_problem(text, label) -> str | None:
    """The first problem of one row (a key of REASONS), or None for a valid row."""
    problem = text_problem(text)
    if problem is None and normalize_label(label) is None:
        return INVALID_LABEL
    return problem


def _describe_problems(bad_rows: dict[str, list[int]], labels, n_rows: int, numbers, unit: str) -> str:
    """One sentence per kind of problem: how many rows, the first few (numbered for a person:
    file lines, or rows from 1), example values."""
    n_bad = sum(len(rows) for rows in bad_rows.values())
    parts = []
    for reason, rows in bad_rows.items():
        if not rows:
            continue
        shown = ", ".join(str(numbers[i]) for i in rows[:_SHOWN_ROWS]) + (", ..." if len(rows) > _SHOWN_ROWS else "")
        part = f"{len(rows)} with {_DESCRIPTIONS[reason]} ({unit}{'s' if len(rows) > 1 else ''} {shown})"
        if reason == INVALID_LABEL:
            examples = sorted({repr(labels[i]) for i in rows[:_SHOWN_ROWS]})
            part += f", e.g. label {', '.join(examples)}"
        parts.append(part)
    return f"{n_bad} of {n_rows} rows are invalid: " + "; ".join(parts)


SKIP_HINT = "Fix the data, or pass --skip-invalid (skip_invalid=True in Python) to drop these rows."


def _bad_rows(values, problem_of) -> dict[str, list[int]]:
    bad_rows: dict[str, list[int]] = {reason: [] for reason in REASONS}
    for index, value in enumerate(values):
        problem = problem_of(value)
        if problem is not None:
            bad_rows[problem].append(index)
    return bad_rows


def validate(texts, labels, *, skip_invalid: bool = False, row_numbers=None, unit: str = "row"):
    """Check a set of texts and labels; return (texts, labels, n_skipped_by_reason).

    Labels must be 0/1 (ints, bools or floats equal to 0 or 1; label 1 = member); texts must be
    non-empty strings. Without ``skip_invalid`` any bad row raises a DataError saying how many
    rows are bad, of which kind, and the first few of them, numbered by ``row_numbers`` (the
    file's line numbers, say, with ``unit="line"``; default: rows counted from 1). With
    ``skip_invalid`` those rows are dropped and counted in ``n_skipped_by_reason`` (one count
    per reason in REASONS, zeros included). In both cases an empty result or a result with one
    class only raises a DataError. Returned texts are a list of str, labels a list of int.
    """
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels: every text needs one label")
    if not texts:
        raise DataError("the set is empty: no rows to use as members or non-members")
    bad_rows = _bad_rows(zip(texts, labels), lambda row: row_problem(*row))
    n_skipped = {reason: len(rows) for reason, rows in bad_rows.items()}
    if sum(n_skipped.values()) and not skip_invalid:
        numbers = row_numbers or range(1, len(texts) + 1)
        raise DataError(f"{_describe_problems(bad_rows, labels, len(texts), numbers, unit)}. {SKIP_HINT}")
    bad = {i for rows in bad_rows.values() for i in rows}
    kept = [i for i in range(len(texts)) if i not in bad]
    kept_labels = [normalize_label(labels[i]) for i in kept]
    check_two_classes(kept_labels, skipped=len(bad))
    return [texts[i] for i in kept], kept_labels, n_skipped


def validate_texts(texts, *, skip_invalid: bool = False, row_numbers=None, unit: str = "row"):
    """Texts without labels (to be scored): return (usable texts, their indices, n_skipped).

    The same text checks, messages and ``skip_invalid`` rule as :func:`validate`.
    """
    texts = list(texts)
    if not texts:
        raise DataError("no texts to score")
    bad_rows = _bad_rows(texts, text_problem)
    n_bad = sum(len(rows) for rows in bad_rows.values())
    if n_bad and not skip_invalid:
        numbers = row_numbers or range(1, len(texts) + 1)
        message = _describe_problems(bad_rows, [None] * len(texts), len(texts), numbers, unit)
        raise DataError(f"{message.replace(' rows are', ' texts are')}. {SKIP_HINT}")
    kept = [i for i, t in enumerate(texts) if text_problem(t) is None]
    if not kept:
        raise DataError(f"no usable text left after skipping {n_bad} invalid row(s)")
    return [texts[i] for i in kept], kept, n_bad


def describe_skipped(n_skipped: dict) -> str | None:
    """'Skipped 3 invalid rows (2 empty text, 1 bad label)' or None when nothing was skipped."""
    counts = {reason: n for reason, n in (n_skipped or {}).items() if n}
    if not counts:
        return None
    parts = ", ".join(f"{n} with {_DESCRIPTIONS.get(reason, reason)}" for reason, n in counts.items())
    return f"Skipped {sum(counts.values())} invalid row(s) (--skip-invalid): {parts}"


def check_two_classes(labels, skipped: int = 0) -> None:
    """Raise a DataError unless both members (1) and non-members (0) are present."""
    after = f" after skipping {skipped} invalid rows" if skipped else ""
    if not labels:
        raise DataError(f"the set is empty{after}: no rows to use as members or non-members")
    n_member = sum(1 for label in labels if label == 1)
    n_nonmember = len(labels) - n_member
    if n_member == 0 or n_nonmember == 0:
        only = "members (label 1)" if n_nonmember == 0 else "non-members (label 0)"
        raise DataError(
            f"the set has only {only}{after}: {n_member} members, {n_nonmember} non-members; "
            "membership inference needs both classes"
        )
