"""Argument types and output checks of the command line: every value a user types is
checked here, before any work, with a message that names the option."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import DataError, MethodError


def _checked(text: str, convert, accept, requirement: str):
    """``convert(text)`` if it parses and ``accept``s it; else argparse's error, saying
    ``requirement`` (argparse names the option)."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (``nan`` and ``inf`` are refused): every float option's default type."""
    return _checked(text, float, math.isfinite, "a finite number")


def non_negative(text: str) -> float:
    """A finite number of at least 0 (a wait in seconds)."""
    return _checked(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number of at least 0")


def positive_int(text: str) -> int:
    return _checked(text, int, lambda v: v >= 1, "a positive integer")


def at_least_two(text: str) -> int:
    return _checked(text, int, lambda v: v >= 2, "an integer of at least 2")


def seed_value(text: str) -> int:
    """A random seed: an integer in [0, 2**32) (what numpy and torch accept alike)."""
    return _checked(text, int, lambda v: 0 <= v < 2 ** 32, "an integer in [0, 2^32)")


def token_budget(text: str) -> int:
    """A token budget: at least 2 (one token to condition on, one to score)."""
    return _checked(text, int, lambda v: v >= 2, "at least 2 (one token is read, the next scored)")


def share(text: str) -> float:
    """A number in (0, 1]: a share of tokens or words."""
    return _checked(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    return _checked(text, float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")


def shares(text: str) -> list[float]:
    return [share(x) for x in text.split(",") if x.strip()]


def method_names(text: str, option: str = "--methods") -> list[str]:
    """Comma-separated method names; at least one."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise MethodError(f"{option} {text!r} names no method; give names such as loss,zlib or all")
    return names


def word_lengths(text: str) -> tuple[int, ...]:
    """Comma-separated positive word counts, e.g. 32,64,128."""
    try:
        lengths = tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated word counts such as 32,64, got {text!r}") from None
    if not lengths or min(lengths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive word counts, got {text!r}")
    return lengths


def check_out_dir(path) -> None:
    """Before any work: ``path`` must be a folder or not exist yet (a run directory)."""
    if Path(path).exists() and not Path(path).is_dir():
        raise DataError(f"--out {path} is an existing file; the output is a folder: choose another path")


def check_out_file(path) -> None:
    """Before any work: ``path`` must not be a folder, and its folder must exist."""
    if path is None:
        return
    if Path(path).is_dir():
        raise DataError(f"--out {path} is a folder; give a file name for the JSON lines")
    if not Path(path).resolve().parent.is_dir():
        raise DataError(f"--out {path}: the folder {Path(path).parent} does not exist")
