"""The generated blocks of BENCHMARKS.md: ``<!-- NAME begin ... -->`` ... ``<!-- NAME end -->``.

BENCHMARKS.md is its template (bench/BENCHMARKS.template.md, the prose) with each
``<!-- generate NAME -->`` line replaced by the block NAME, rendered from records stored under
bench/results/ (never from a run folder, never typed), so it can be rendered again anywhere:
`bench/check_generated.py` does, and fails when BENCHMARKS.md differs. A script stores its
record, then calls ``publish(name)`` (its block must have a placeholder) or ``refresh()``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
TEMPLATE = ROOT / "bench" / "BENCHMARKS.template.md"
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


def refresh() -> None:
    """Render BENCHMARKS.md again from its template and every stored record."""
    import check_generated  # here: it imports every generator, and they import this module

    BENCHMARKS.write_text(check_generated.render_document(), encoding="utf-8")


def publish(name: str) -> None:
    """Render BENCHMARKS.md again, now that block ``name``'s record is stored; a block the
    template does not place is an error naming the line to add."""
    import check_generated  # here: it imports every generator, and they import this module

    if name not in check_generated.placeholders(TEMPLATE.read_text(encoding="utf-8")):
        raise SystemExit(f"{TEMPLATE} has no line `<!-- generate {name} -->`: add one where the block belongs")
    refresh()
