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


def row_problem(text, label) -> str | None:
    """The first problem of one row (a key of REASONS), or None for a valid row."""
    if not isinstance(text, str):
        return NON_STRING_TEXT
    if not text.strip():
        return EMPTY_TEXT
    if normalize_label(label) is None:
        return INVALID_LABEL
    return None


def _describe_problems(bad_rows: dict[str, list[int]], labels, n_rows: int) -> str:
    """One sentence per kind of problem: how many rows, the first few indices, example values."""
    n_bad = sum(len(rows) for rows in bad_rows.values())
    parts = []
    for reason, rows in bad_rows.items():
        if not rows:
            continue
        shown = ", ".join(str(i) for i in rows[:_SHOWN_ROWS]) + (", ..." if len(rows) > _SHOWN_ROWS else "")
        part = f"{len(rows)} with {_DESCRIPTIONS[reason]} (row{'s' if len(rows) > 1 else ''} {shown})"
        if reason == INVALID_LABEL:
            examples = sorted({repr(labels[i]) for i in rows[:_SHOWN_ROWS]})
            part += f", e.g. label {', '.join(examples)}"
        parts.append(part)
    return f"{n_bad} of {n_rows} rows are invalid: " + "; ".join(parts)


def validate(texts, labels, *, skip_invalid: bool = False):
    """Check a set of texts and labels; return (texts, labels, n_skipped_by_reason).

    Labels must be 0/1 (ints, bools or floats equal to 0 or 1; label 1 = member); texts must be
    non-empty strings. Without ``skip_invalid`` any bad row raises a DataError saying how many
    rows are bad, of which kind, and the first few row indices (0-based). With ``skip_invalid``
    those rows are dropped and counted in ``n_skipped_by_reason`` (one count per reason in
    REASONS, zeros included). In both cases an empty result or a result with one class only
    raises a DataError. Returned texts are a list of str, labels a list of int.
    """
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels: every text needs one label")
    if not texts:
        raise DataError("the set is empty: no rows to use as members or non-members")
    bad_rows: dict[str, list[int]] = {reason: [] for reason in REASONS}
    kept_texts, kept_labels = [], []
    for index, (text, label) in enumerate(zip(texts, labels)):
        problem = row_problem(text, label)
        if problem is None:
            kept_texts.append(text)
            kept_labels.append(normalize_label(label))
        else:
            bad_rows[problem].append(index)
    n_skipped = {reason: len(rows) for reason, rows in bad_rows.items()}
    if sum(n_skipped.values()) and not skip_invalid:
        message = _describe_problems(bad_rows, labels, len(texts))
        raise DataError(f"{message}. Fix the data, or pass skip_invalid=True (--skip-invalid on the command line) to drop these rows.")
    check_two_classes(kept_labels, skipped=sum(n_skipped.values()))
    return kept_texts, kept_labels, n_skipped


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
