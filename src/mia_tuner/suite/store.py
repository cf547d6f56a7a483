"""Where a suite keeps what it computed: one folder per cell, one JSON record per column.

A cell is (model, dataset, seed, training texts per class). Its folder name carries a hash of
everything that determines the split (model, the set's content, split settings), and every
record carries the key of its own settings: a record is reused only when both match, so
changing a method's settings recomputes that method alone and re-running a finished suite
reads files and loads no model. Each record holds its own SHA-256 (``integrity``): a record
changed by hand or cut short is refused with the file named, never read as a result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ArtefactError
from ..integrity import check_self_hash, content_sha256, file_sha256, replace_atomically
from ..reports import jsonable, safe_filename

FORMAT = "mia-tuner-suite-record/1"


def texts_digest(texts, labels) -> str:
    """One hash of a set's texts and labels (what the cell's results depend on)."""
    return content_sha256([[str(t), int(y)] for t, y in zip(texts, labels)])


def settings_key(settings: dict) -> str:
    return content_sha256(jsonable(settings))[:16]


class CellStore:
    """Records of one cell in ``directory`` (created on first write). ``keep`` False (a run
    with --no-cache): nothing is read or written, every column is computed afresh."""

    def __init__(self, directory: Path, keep: bool = True):
        self.directory, self.keep = Path(directory), keep

    def path(self, column: str) -> Path:
        return self.directory / f"{safe_filename(column)}.json"

    def load(self, column: str, key: str) -> dict | None:
        """The record of ``column`` computed with settings ``key``; None when absent or
        computed with other settings; ArtefactError when the file is damaged."""
        path = self.path(column)
        if not self.keep or not path.is_file():
            return None
        remedy = f"delete {path} to recompute it"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ArtefactError(f"{path} is not valid JSON (cut short or edited); {remedy}") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ArtefactError(f"{path} is not a suite record; {remedy}")
        check_self_hash(record, path, remedy)
        return record if record.get("key") == key and record.get("column") == column else None

    def save(self, column: str, key: str, record: dict) -> dict:
        """Write ``record`` for ``column`` atomically, with its key and hash."""
        record = jsonable({**record, "format": FORMAT, "column": column, "key": key})
        record["sha256"] = content_sha256(record)
        if not self.keep:
            return record
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(column)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        replace_atomically(tmp, path)
        return record

    def records(self) -> list[dict]:
        """Every record in the folder (each checked)."""
        out = []
        for path in sorted(self.directory.glob("*.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            check_self_hash(record, path, f"delete {path} to recompute it")
            out.append(record)
        return out


def artefact_stamp(artefact_json: Path) -> dict:
    """Record fields naming a command's artefact in its --out (a detector's or a defence's
    JSON) and its hash: the record holds only while that artefact does (artefact_intact)."""
    path = Path(artefact_json)
    return {"artefact": str(path), "artefact_sha256": file_sha256(path) if path.is_file() else None}


def artefact_intact(record: dict) -> bool:
    """Whether the artefact a command's record names is still the one it was made with (one
    replaced or removed since, by another run into the same --out, makes the record stale). A
    suite's record names none: it holds its results whatever becomes of its artefacts."""
    if "artefact" not in record:
        return True
    return artefact_stamp(Path(record["artefact"]))["artefact_sha256"] == record["artefact_sha256"]
