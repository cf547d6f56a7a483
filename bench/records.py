"""The JSON records under bench/results/: rows merged by a key (a re-run replaces its own rows,
never another's) or appended, then BENCHMARKS.md rendered again from every record."""

from __future__ import annotations

import json
from pathlib import Path

from blocks import refresh


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    refresh()


def _read(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


def merge(records: list[dict], path: Path, key: tuple) -> None:
    """Write ``records`` into the JSON list at ``path``, replacing the rows with the same ``key``."""
    new_keys = {tuple(r.get(k) for k in key) for r in records}
    _write(path, [r for r in _read(path) if tuple(r.get(k) for k in key) not in new_keys] + records)


def append(records: list[dict], path: Path) -> None:
    """Add ``records`` at the end of the JSON list at ``path`` (a log of runs)."""
    _write(path, _read(path) + records)
