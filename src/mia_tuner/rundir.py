"""A run directory that one run at a time writes, and that holds one configuration's results.

``claim_run_dir`` takes an exclusive lock on ``OUT/.lock`` for the whole run (a second run into
the same folder stops at once, naming the first), then compares the resolved configuration with
the one ``OUT/run.json`` recorded for the results already there. The same configuration is a
re-run (it continues an interrupted run, or repeats a finished one); another configuration's
results are replaced only with ``overwrite``. ``run.json`` is written before any work, so a folder
that holds results always says what made them.

Under several processes (``accelerate launch`` / ``torchrun``) only the first claims the folder:
the others write nothing into it, and start only once it has recorded their configuration (so
that none of them reads a record that ``overwrite`` is about to drop).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from .errors import RunDirError
from .integrity import content_sha256, replace_atomically

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
# the records a command's one-cell suite keeps (suite.single): of a first run that failed, they
# hold nothing the caches do not (scores, fine-tuned models and detectors live there)
CELL_RECORDS = "cells"
FORMAT = "mia-tuner-run"
# files a run leaves in its folder: one of them without run.json means results of unknown origin
RESULT_FILES = ("config.json", "metrics.json", "scores.csv", "table.md", "report.json")


VOLATILE_KEYS = ("out", "cache_dir", "use_cache")  # where things go, not what the results are
CLAIM_WAIT_SECONDS = 600  # how long the other processes wait for the first to claim the folder


def run_identity(**parts) -> dict:
    """JSON data of what determines a run's results: each part a dataclass (``to_dict``) or
    plain data, with output and cache locations left out at any depth."""
    def plain(value):
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items() if k not in VOLATILE_KEYS}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {name: plain(value) for name, value in parts.items()}


def _is_first_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def _recorded(out: Path) -> dict | None:
    """The run record of ``out``; a damaged one reads as an unknown configuration."""
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and record.get("format") == FORMAT else {}


def check_configuration(out: Path, identity: dict, overwrite: bool) -> None:
    """RunDirError when ``out`` holds results of another configuration (and not ``overwrite``;
    with it, the records of the configuration replaced are dropped, never read again)."""
    record = _recorded(out)
    if overwrite:  # a command's folder (run.json) of another configuration: its records go too
        if record is not None and record.get("identity_sha256") != content_sha256(identity):
            _drop_cell_records(out)
        return
    if record is None:
        found = [name for name in RESULT_FILES if (out / name).is_file()]
        if found:
            raise RunDirError(f"--out {out} already holds results ({', '.join(found)}) that no run record "
                              "describes (written by an earlier mia-tuner or by hand): pass --overwrite to "
                              "replace them, or choose another --out")
        return
    if record.get("identity_sha256") == content_sha256(identity):
        return
    changed = _differences(record.get("identity") or {}, identity)
    what = f"differs in {', '.join(changed[:6])}{', ...' if len(changed) > 6 else ''}" if changed else "unknown"
    raise RunDirError(f"--out {out} holds the results of another configuration ({record.get('command', 'a run')}, "
                      f"started {record.get('started', '?')}; {what}): pass --overwrite to replace them, or "
                      "choose another --out")


def _lock(out: Path):
    """An exclusive, non-blocking lock on ``out/.lock`` (released when the handle closes, also
    when the process is killed); RunDirError naming the holder when another run has it."""
    handle = open(out / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunDirError(f"--out {out} is in use by another run ({holder}): wait for it to finish, "
                          "or choose another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    handle.flush()
    return handle


def _write_record(out: Path, command: str, identity: dict) -> None:
    record = {"format": FORMAT, "command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "identity": identity, "identity_sha256": content_sha256(identity)}
    tmp = out / f"{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    replace_atomically(tmp, out / RUN_FILE)


@contextlib.contextmanager
def claim_run_dir(out, command: str, identity: dict, overwrite: bool = False):
    """Hold ``out`` for one run (module docstring): lock it, refuse another configuration's
    results unless ``overwrite``, record this configuration; ``identity`` is JSON data that
    determines the results (settings and a data fingerprint, not paths of caches)."""
    out = Path(out)
    if not _is_first_process():
        _wait_for_claim(out, identity)
        yield out
        return
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is an existing file; the output is a folder: choose another path")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handle = _lock(out)
    try:
        check_configuration(out, identity, overwrite)
        _write_record(out, command, identity)
        yield out
    except BaseException:
        if created:  # a run that failed before writing anything leaves no folder behind
            _remove_if_only_ours(out)
        raise
    finally:
        handle.close()


def _wait_for_claim(out: Path, identity: dict) -> None:
    """Return once ``out``'s run record names ``identity``: the first process has checked the
    folder and dropped the records an ``overwrite`` replaces. RunDirError after
    CLAIM_WAIT_SECONDS (the first process stopped without claiming it)."""
    wanted = content_sha256(identity)
    deadline = time.monotonic() + CLAIM_WAIT_SECONDS
    while (_recorded(out) or {}).get("identity_sha256") != wanted:
        if time.monotonic() > deadline:
            raise RunDirError(f"--out {out}: the first process did not claim the folder within "
                              f"{CLAIM_WAIT_SECONDS} s (see its error)")
        time.sleep(0.2)


def _drop_cell_records(out: Path) -> None:
    if (out / CELL_RECORDS).is_dir():
        shutil.rmtree(out / CELL_RECORDS)


def _remove_if_only_ours(out: Path) -> None:
    if {p.name for p in out.iterdir()} <= {RUN_FILE, LOCK_FILE, CELL_RECORDS}:
        _drop_cell_records(out)
        for name in (RUN_FILE, LOCK_FILE):
            (out / name).unlink(missing_ok=True)
        out.rmdir()
