"""On-disk cache of per-text scores, keyed by model, method settings and text.

One SQLite file; a row is one score. Scores are written batch by batch as they are computed,
so a re-run, a run that adds a method or texts, or a run after an interruption computes only
the rows that are missing. Several processes may share the file: each write is one short
transaction, and a process that finds the file locked waits up to ``lock_timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from .data.types import text_hash
from .errors import CacheError

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    model TEXT NOT NULL, method TEXT NOT NULL, settings TEXT NOT NULL, text TEXT NOT NULL,
    score REAL NOT NULL, PRIMARY KEY (model, method, settings, text)
)
"""
LOCK_TIMEOUT = 120.0  # seconds: longer than any one write of another run takes


def settings_key(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


class ScoreCache:
    """Scores stored under (model fingerprint, method name, settings, text hash)."""

    def __init__(self, path: str | Path, lock_timeout: float | None = None):
        self.path = Path(path)
        self.lock_timeout = LOCK_TIMEOUT if lock_timeout is None else lock_timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheError(f"cannot create the score cache folder {self.path.parent}: {error}") from None
        with self._guard():
            self._db = sqlite3.connect(self.path, timeout=self.lock_timeout)
            with contextlib.suppress(sqlite3.OperationalError):  # e.g. a file system without WAL
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)

    @contextlib.contextmanager
    def _guard(self):
        """Turn SQLite's errors into one clear CacheError."""
        try:
            yield
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise CacheError(
                    f"the score cache {self.path} stayed locked by another process for "
                    f"{self.lock_timeout:g} s; wait for that run to finish, or run with "
                    "--no-cache or another --cache-dir") from None
            raise CacheError(f"the score cache {self.path} cannot be used: {error}") from None
        except sqlite3.DatabaseError as error:
            raise CacheError(f"{self.path} is not a usable score cache ({error}); delete it "
                             "(scores are recomputed) or pass another --cache-dir") from None

    def get(self, model: str, method: str, settings: dict, texts: list[str]) -> dict[str, float]:
        """Cached scores of those ``texts`` that have one, by text hash."""
        key = settings_key(settings)
        hashes = [text_hash(t) for t in texts]
        found: dict[str, float] = {}
        with self._guard():
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
        with self._guard(), self._db:
            self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()


class NoCache:
    """Stands in for ScoreCache when caching is off."""

    path = None

    def get(self, *args, **kwargs) -> dict[str, float]:
        return {}

    def put(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
