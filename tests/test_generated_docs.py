"""BENCHMARKS.md is generated: its template's prose and its records' tables, nothing typed
(bench/check_generated.py renders it again and fails on any difference)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def _checker():
    sys.path.insert(0, str(BENCH))
    try:
        import check_generated
    finally:
        sys.path.remove(str(BENCH))
    return check_generated


def test_benchmarks_is_exactly_its_rendering():
    done = subprocess.run([sys.executable, str(BENCH / "check_generated.py")], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_number_edited_by_hand_in_a_block_is_caught():
    checker = _checker()
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    demo = checker.current(text, "demo")
    edited = re.sub(r"\| first run \| (\d+)", lambda m: f"| first run | {int(m.group(1)) + 1}", demo, count=1)
    assert edited != demo
    assert list(checker.stale_blocks(text.replace(demo, edited))) == ["demo"]
    assert checker.stale_blocks(text) == {}
    assert "first run" in checker.difference(text.replace(demo, edited))


def test_prose_edited_outside_the_template_is_caught():
    checker = _checker()
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert checker.difference(text) == ""
    edited = text.replace("## Speed and memory\n", "## Speed and memory\n\nFast: 3 times faster.\n", 1)
    assert edited != text
    assert "3 times faster" in checker.difference(edited)


# a measured number typed into prose: a decimal (0.83, 16.1) or a quantity of time or memory (the
# template writes the machine's specification in words)
TYPED_RESULT = re.compile(r"\d\.\d|\b\d+ ?(?:s|min|h|GB|MB)\b")


def test_the_template_carries_no_typed_result():
    template = (BENCH / "BENCHMARKS.template.md").read_text(encoding="utf-8")
    assert TYPED_RESULT.findall(template) == []
    assert TYPED_RESULT.findall("AUROC 0.834 in 16 min") == ["0.8", "16 min"]  # the pattern itself finds them


def test_every_placeholder_of_the_template_has_a_renderer():
    checker = _checker()
    names = checker.placeholders((BENCH / "BENCHMARKS.template.md").read_text(encoding="utf-8"))
    assert len(names) == len(set(names)) >= 20
    for name in names:
        assert checker.render(name).startswith(f"<!-- {name} begin")


# a result typed into the README: a score (0.83, 0.889) in prose, or a duration anywhere (the
# quick start's "~16 min"); option values in backticks and version numbers are not results
README_SCORE = re.compile(r"(?<![\w.])0\.\d{2,3}(?!\d)")
README_DURATION = re.compile(r"(?<![\w.])\d+ ?(?:s|min|h)\b")


def readme_results(text: str) -> list[str]:
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
    return README_SCORE.findall(prose) + README_DURATION.findall(text)


def test_the_readme_types_at_most_ten_results():
    """The README keeps a handful of numbers; every other result is a generated table of
    BENCHMARKS.md that it links to."""
    typed = readme_results((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(typed) <= 10, typed
    example = "AUROC 0.889 at `--k 0.25`, version 4.57, ~16 min on 2 cores, spaced 0.5 s\n```\n0.91\n```"
    assert readme_results(example) == ["0.889", "16 min"]
