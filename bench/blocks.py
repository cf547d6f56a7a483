"""The generated blocks of BENCHMARKS.md: ``<!-- NAME begin ... -->`` ... ``<!-- NAME end -->``.

Every block is rendered from a record stored under bench/results/ (never from a run folder,
never typed), so it can be rendered again anywhere: `bench/check_generated.py` does, and fails
when BENCHMARKS.md differs from what its records give. Each generator names its blocks here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
# a marker starts its line (the file's prose may quote a marker inside backquotes)
ANY_BLOCK = re.compile(r"^<!-- (?P<name>[\w:.+-]+) begin.*?^<!-- (?P=name) end -->", re.S | re.M)


def pattern(name: str) -> re.Pattern:
    return re.compile(rf"^<!-- {re.escape(name)} begin.*?^<!-- {re.escape(name)} end -->", re.S | re.M)


def block_names(text: str) -> list[str]:
    """The names of the generated blocks in ``text``, in order."""
    return [m.group("name") for m in ANY_BLOCK.finditer(text)]


def current(text: str, name: str) -> str:
    """The block called ``name`` as ``text`` has it."""
    return pattern(name).search(text).group(0)


def write_block(name: str, new: str, path: Path = BENCHMARKS) -> None:
    """Replace the block called ``name`` in place, or add it at the end the first time."""
    text = path.read_text(encoding="utf-8")
    found = pattern(name)
    text = found.sub(lambda _: new, text) if found.search(text) else text.rstrip() + "\n\n" + new + "\n"
    path.write_text(text, encoding="utf-8")
