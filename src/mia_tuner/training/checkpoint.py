"""A resumable training state on disk: written atomically, checked by hash when read.

The state lives in ``state-<hash>.pt`` and ``checkpoint.json`` names it with its SHA-256 and the
run key (a hash of everything that determines the run). A new state is written under its own
name before ``checkpoint.json`` is replaced, and the old one is removed after, so a kill at any
moment leaves a complete, matching pair.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from ..errors import ArtefactError
from ..integrity import file_sha256, replace_atomically

log = logging.getLogger(__name__)
META_FILE = "checkpoint.json"


class Checkpoint:
    """The latest state of one run (identified by ``key``) in ``directory``."""

    def __init__(self, directory: str | Path, key: str):
        self.directory = Path(directory)
        self.key = key

    def save(self, state: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / "state.pt.tmp"
        torch.save(state, tmp)
        digest = file_sha256(tmp)
        final = self.directory / f"state-{digest[:16]}.pt"
        replace_atomically(tmp, final)
        previous = self._meta()
        meta_tmp = self.directory / (META_FILE + ".tmp")
        meta_tmp.write_text(json.dumps({"key": self.key, "file": final.name, "sha256": digest}))
        replace_atomically(meta_tmp, self.directory / META_FILE)
        if previous and previous.get("file") != final.name:
            (self.directory / previous["file"]).unlink(missing_ok=True)

    def _meta(self) -> dict | None:
        path = self.directory / META_FILE
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ArtefactError(f"the checkpoint {path} is damaged; pass --restart to start afresh") from None
        if not isinstance(meta, dict) or not {"key", "file", "sha256"} <= set(meta):
            raise ArtefactError(f"the checkpoint {path} is incomplete; pass --restart to start afresh")
        return meta

    def load(self) -> dict | None:
        """The saved state of this run; None when there is none or it is another run's."""
        meta = self._meta()
        if meta is None:
            return None
        if meta["key"] != self.key:
            log.warning("the checkpoint in %s belongs to another run (other settings or data): "
                        "starting afresh", self.directory)
            return None
        path = self.directory / str(meta["file"])
        if not path.is_file() or file_sha256(path) != meta["sha256"]:
            raise ArtefactError(f"the checkpoint state {path} is missing or damaged (SHA-256 "
                                "mismatch); pass --restart to start afresh")
        return torch.load(path, map_location="cpu", weights_only=True)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
