"""On-disk cache of per-text scores, keyed by model, method settings and text.

One SQLite file; a row is one score. A re-run, or a run that adds a method or texts, computes
only the rows that are missing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .data.types import text_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    model TEXT NOT NULL, method TEXT NOT NULL, settings TEXT NOT NULL, text TEXT NOT NULL,
    score REAL NOT NULL, PRIMARY KEY (model, method, settings, text)
)
"""


def settings_key(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


class ScoreCache:
    """Scores stored under (model fingerprint, method name, settings, text hash)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute(SCHEMA)

    def get(self, model: str, method: str, settings: dict, texts: list[str]) -> dict[str, float]:
        """Cached scores of those ``texts`` that have one, by text hash."""
        key = settings_key(settings)
        hashes = [text_hash(t) for t in texts]
        found: dict[str, float] = {}
        for start in range(0, len(hashes), 500):  # SQLite caps the number of parameters
            chunk = hashes[start:start + 500]
            rows = self._db.execute(
                "SELECT text, score FROM scores WHERE model=? AND method=? AND settings=? "
                f"AND text IN ({','.join('?' * len(chunk))})", [model, method, key, *chunk])
            found.update(rows.fetchall())
        return found

    def put(self, model: str, method: str, settings: dict, texts: list[str], scores) -> None:
        key = settings_key(settings)
        rows = [(model, method, key, text_hash(t), float(s)) for t, s in zip(texts, scores)]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()


class NoCache:
    """Stands in for ScoreCache when caching is off."""

    def get(self, *args, **kwargs) -> dict[str, float]:
        return {}

    def put(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
