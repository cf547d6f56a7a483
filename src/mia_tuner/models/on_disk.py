"""What a model is on disk, read without loading its weights: where it lives on this machine,
a hash of its weight files as they are (what a command's records are keyed by) and its context
length from its configuration."""

from __future__ import annotations

from pathlib import Path

from mia_tuner.config import ModelConfig
from mia_tuner.models.loading import context_length, local_source

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".json")


def weights_manifest(config: ModelConfig, cache_dir=None) -> str | None:
    """A hash of the target's weight and config files as they are on disk (name, size, time of
    last change), without reading them: what a command's records are keyed by, so that a model
    changed in place is scored again. None when the model is not on this machine."""
    from mia_tuner.integrity import content_sha256

    source = local_source(config, cache_dir)
    if source is None:
        return None
    folder = Path(source.location)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    entries = [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return content_sha256({"files": entries, "gguf_file": source.gguf_file})


def context_tokens(config: ModelConfig, cache_dir=None) -> int | None:
    """The model's context length from its configuration alone (no weights loaded); None when
    it cannot be read."""
    from transformers import AutoConfig

    source = local_source(config, cache_dir)
    if source is None:
        return None
    try:
        kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
        return context_length(AutoConfig.from_pretrained(source.location, **kwargs))
    except Exception:  # noqa: BLE001 - only a warning's threshold depends on it
        return None
