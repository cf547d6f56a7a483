"""Render every generated block of BENCHMARKS.md again from the records under bench/results/
and fail (exit 1, naming the blocks) where the file says something else: a number edited by
hand, or a record changed without its block. `--write` puts the rendered blocks in instead.
Needs no run folder, no model and no ../shared (the test suite runs it).

    .venv/bin/python bench/check_generated.py [--write]
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling generators

import demo_timing  # noqa: E402
import publish_suite  # noqa: E402
import reference_goals  # noqa: E402
import reliability  # noqa: E402
from blocks import BENCHMARKS, block_names, current, write_block  # noqa: E402

RENDERERS = {"reference-goals": reference_goals.stored_block, "reliability:bad-input": reliability.stored_block,
             "demo": demo_timing.stored_block}


def render(name: str) -> str:
    """The block called ``name`` from its stored records; KeyError for a block nobody generates."""
    if name.startswith("suite:"):
        return publish_suite.block(name.removeprefix("suite:"))
    return RENDERERS[name]()


def stale_blocks(text: str) -> dict[str, str]:
    """name -> unified diff, for every block whose text differs from its rendering."""
    out = {}
    for name in block_names(text):
        want, have = render(name), current(text, name)
        if want != have:
            out[name] = "\n".join(difflib.unified_diff(have.splitlines(), want.splitlines(), "BENCHMARKS.md",
                                                       "rendered", lineterm="", n=0))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the stale blocks by their rendering")
    args = parser.parse_args()
    text = BENCHMARKS.read_text(encoding="utf-8")
    stale = stale_blocks(text)
    if args.write:
        for name in stale:
            write_block(name, render(name))
    for name, diff in stale.items():
        print(f"{'rewrote' if args.write else 'stale'}: {name}\n{diff[:4000]}")
    print(f"{len(block_names(text))} generated blocks, {len(stale)} differing from their records")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
