"""What a model is on disk, read without loading its weights: where it lives on this machine,
a hash of its weight files as they are (what a command's records are keyed by) and its context
length from its configuration."""

from __future__ import annotations

from pathlib import Path

from mia_tuner.config import ModelConfig
from mia_tuner.models.loading import context_length, local_source

# what a model is made of in its folder: weights (sharded or not), configuration, tokenizer
MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
               "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja")


def weights_manifest(config: ModelConfig, cache_dir=None) -> str | None:
    """A hash of the model's files as they are on disk (name, size, time of last change),
    without reading them: what a command's records are keyed by, so that a model changed in
    place is scored again. Only the model's own files count (its folder's top level: weights,
    configuration, tokenizer; of a GGUF folder, the one file used), never results written
    beside them. None when the model is not on this machine."""
    from mia_tuner.integrity import content_sha256

    source = local_source(config, cache_dir)
    if source is None:
        return None
    folder = Path(source.location)
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and _is_model_file(p.name, source.gguf_file)]
    entries = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return content_sha256({"files": entries, "gguf_file": source.gguf_file})


def _is_model_file(name: str, gguf_file: str | None) -> bool:
    if name in MODEL_FILES:
        return True
    if gguf_file:  # a folder of GGUF files: the one loaded
        return name == gguf_file
    return name.endswith(MODEL_SUFFIXES) or name.endswith(".index.json")


def context_tokens(config: ModelConfig, cache_dir=None) -> int | None:
    """The model's context length from its configuration alone (no weights loaded); None when
    it cannot be read."""
    from transformers import AutoConfig

    source = local_source(config, cache_dir)
    if source is None:
        return None
    try:
        kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
        return context_length(AutoConfig.from_pretrained(source.location, trust_remote_code=bool(
            config.trust_remote_code), **kwargs))
    except Exception:  # noqa: BLE001 - only a warning's threshold depends on it
        return None
