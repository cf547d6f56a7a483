"""Checks that texts and labels form a usable member/non-member set."""

from __future__ import annotations

import logging
import math
import numbers
import unicodedata

from mia_tuner.errors import DataError

log = logging.getLogger(__name__)

# Why a row can be rejected, in the order the checks run (a row counts under its first problem).
NON_STRING_TEXT = "non_string_text"
EMPTY_TEXT = "empty_text"
INVALID_LABEL = "invalid_label"
REASONS = (NON_STRING_TEXT, EMPTY_TEXT, INVALID_LABEL)

_DESCRIPTIONS = {
    NON_STRING_TEXT: "a text that is missing or not a string",
    EMPTY_TEXT: "an empty text or one with no visible character",
    INVALID_LABEL: "a label that is not 0 or 1",
}
_SHOWN_ROWS = 5
# Found only once a tokenizer is at hand (after the model is loaded, before any forward pass).
TOO_FEW_TOKENS = "too_few_tokens"
MIN_TOKENS = 2  # one token to condition on, one to score
_DESCRIPTIONS[TOO_FEW_TOKENS] = f"a text of fewer than {MIN_TOKENS} tokens (no token to score after the first)"


def normalize_label(value) -> int | None:
    """Return 0 or 1 for a valid label, None otherwise: the one label parser of every source.

    Valid labels are ints, bools and floats (numpy numbers included) equal to 0 or 1, and
    strings that read as such a number (``"1"``, ``" 0 "``, ``"1.0"``: what CSV files and
    hand-written JSON hold). Anything else (``"yes"``, 2, 0.5, NaN, None) is not a label.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number) and number in (0.0, 1.0):
            return int(number)
    return None


# Unicode categories of characters that show nothing on their own: separators (Z*), controls
# and format characters such as zero-width spaces and the byte-order mark (C*), and combining
# marks (M*), which only modify a visible character before them.
_INVISIBLE_CATEGORIES = ("Z", "C", "M")


def has_visible_character(text: str) -> bool:
    """Whether ``text`` holds at least one letter, digit, punctuation mark or symbol."""
    return any(not unicodedata.category(char).startswith(_INVISIBLE_CATEGORIES) for char in text)


def text_problem(text) -> str | None:
    """NON_STRING_TEXT, EMPTY_TEXT (nothing visible: whitespace, zero-width characters or
    combining marks only) or None for a usable text."""
    if not isinstance(text, str):
        return NON_STRING_TEXT
    if not has_visible_character(text):
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


def token_lengths(tokenizer, texts) -> list[int]:
    """Tokens of each text as the model reads it (with the tokenizer's special tokens)."""
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


def check_token_counts(texts, tokenizer, *, max_tokens: int | None = None, skip_invalid: bool = False,
                       what: str = "the set", min_tokens: int = MIN_TOKENS) -> tuple[list[int], int]:
    """Before any forward pass: (indices of the texts the model can score, how many were
    skipped). A text of fewer than ``min_tokens`` tokens is a DataError (with ``skip_invalid``:
    left out and counted). Texts longer than ``max_tokens`` are announced, with what will be
    done with them (scored on their first ``max_tokens`` tokens), by a logged warning."""
    lengths = token_lengths(tokenizer, texts)
    short = [i for i, n in enumerate(lengths) if n < min_tokens]
    if short and not skip_invalid:
        examples = ", ".join(repr(texts[i][:40]) for i in short[:3])
        raise DataError(f"{what}: {len(short)} text(s) have fewer than {min_tokens} tokens under this model's "
                        f"tokenizer, so no token can be scored (e.g. {examples}). {SKIP_HINT}")
    kept = [i for i, n in enumerate(lengths) if n >= min_tokens]
    long = [lengths[i] for i in kept if max_tokens and lengths[i] > max_tokens]
    if long:
        log.warning(f"{what}: {len(long)} text(s) are longer than the {max_tokens} tokens scored per text "
                    f"(the longest: {max(long)} tokens); each is scored on its first {max_tokens} tokens "
                    "only (--max-tokens sets the cut)")
    return kept, len(short)


def drop_unscorable(ms, tokenizer, *, max_tokens: int | None = None):
    """``ms`` without the texts too short to score (check_token_counts); whether to refuse or
    skip them follows the ``skip_invalid`` the set was loaded with, and skipped texts are
    counted in ``info["n_skipped"]``."""
    kept, n_short = check_token_counts(list(ms.texts), tokenizer, max_tokens=max_tokens,
                                       skip_invalid=bool(ms.info.get("skip_invalid")), what=ms.name)
    if not n_short:
        return ms
    out = ms.subset(kept)
    out.info["n_skipped"] = {**ms.info.get("n_skipped", {}), TOO_FEW_TOKENS: n_short}
    check_two_classes(out.labels, skipped=n_short)
    return out
