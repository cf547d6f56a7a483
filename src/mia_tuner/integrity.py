"""Content hashes that saved artefacts record and check when they are loaded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mia_tuner.errors import ArtefactError


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


def read_artefact_json(path: Path, fmt: str, what: str, required=(), error=ArtefactError) -> dict:
    """The JSON object of an artefact's description file ``path``, whose ``format`` must be
    ``fmt``: ``error`` (ArtefactError or a subclass) when the folder or file is absent, not
    JSON, of another format or missing one of ``required`` (``what`` names the artefact in the
    messages)."""
    directory = path.parent
    if not directory.is_dir():
        raise error(f"{directory} is not a {what} directory (no such folder)")
    if not path.is_file():
        raise error(f"{directory} is not a {what} directory (no {path.name})")
    try:
        info = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{path} is damaged: not valid JSON ({problem})") from None
    if not isinstance(info, dict) or info.get("format") != fmt:
        raise error(f"{path} is not a mia-tuner {what} file")
    missing = [key for key in required if key not in info]
    if missing:
        raise error(f"{path} is incomplete: no {', '.join(missing)}")
    return info


def check_self_hash(info: dict, path: Path, remedy: str, error=ArtefactError) -> None:
    """``error`` (ArtefactError or a subclass) unless ``info`` without its ``sha256`` hashes to
    it (content_sha256)."""
    if info.get("sha256") != content_sha256({k: v for k, v in info.items() if k != "sha256"}):
        raise error(f"{path} was changed or damaged after it was saved (its content does not "
                    f"match the hash it records); {remedy}")


def check_recorded_files(directory: Path, files: dict[str, str], what: str, remedy: str,
                         error=ArtefactError) -> None:
    """``error`` (ArtefactError or a subclass) unless every file of ``{name: sha256}`` is in
    ``directory`` unchanged."""
    for name, expected in files.items():
        path = Path(directory) / name
        if not path.is_file():
            raise error(f"{what} {directory} is incomplete: {name} is missing")
        if file_sha256(path) != expected:
            raise error(f"{what} file {path} was changed or damaged after it was saved "
                        f"(SHA-256 mismatch); {remedy}")
