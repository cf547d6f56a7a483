"""BENCHMARKS.md's generated blocks say what their stored records say (bench/check_generated.py)."""

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


def test_every_generated_block_of_benchmarks_matches_its_records():
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
