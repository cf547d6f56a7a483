"""Content hashes that saved artefacts record and check when they are loaded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(data) -> str:
    """SHA-256 of JSON-serialisable data in canonical form (sorted keys, no spaces)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def replace_atomically(tmp: Path, final: Path) -> None:
    """Move a fully written ``tmp`` over ``final``: a kill leaves the old or the new file."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def file_records(directory: str | Path) -> dict[str, dict]:
    """``{name: {sha256, size, mtime_ns}}`` of every file directly in ``directory``."""
    out = {}
    for path in sorted(Path(directory).iterdir()):
        if path.is_file():
            stat = path.stat()
            out[path.name] = {"sha256": file_sha256(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return out


def changed_files(directory: str | Path, records: dict[str, dict]) -> list[str]:
    """What no longer matches ``file_records``: a file is re-hashed only when its size or
    modification time moved, so checking an untouched multi-GB folder costs a few stat calls."""
    problems = []
    for name, record in records.items():
        path = Path(directory) / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        stat = path.stat()
        if (stat.st_size, stat.st_mtime_ns) == (record["size"], record["mtime_ns"]):
            continue
        if stat.st_size != record["size"] or file_sha256(path) != record["sha256"]:
            problems.append(f"{name} was changed or damaged")
    return problems
