"""Load any causal LM (offline short name, local directory, local GGUF file or hub id)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mia_tuner.config import ModelConfig
from mia_tuner.errors import ModelError
from mia_tuner.hub import hub_unreachable  # noqa: F401 - tests stub it here
from mia_tuner.models import offline

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")
QUANTIZATIONS = (None, "8bit", "4bit")
DEFAULT_MAX_TOKENS = 2048  # used when the config gives no (or an absurd) context length
_ABSURD_CONTEXT = 1_000_000
# Elements hashed per tensor. Kept at torch's parallel grain size (32768): above it the strided
# copy goes multi-threaded, which on a busy CPU made fingerprints ~10x slower (1.2 s for SmolLM2).
_SAMPLES_PER_TENSOR = 32768
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class LoadedModel:
    """A model in eval mode with its tokenizer (pad token set, right padding)."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    name: str
    fingerprint: str
    kind: str  # "aligned" (has a chat template) | "base"
    defence: str | None = None  # the hash of a defence applied to the model (safeguards)

    @property
    def device(self) -> torch.device:
        """Where the inputs must go (the first parameter's device under a device map)."""
        device = getattr(self.model, "device", None)
        if isinstance(device, torch.device):
            return device
        return next(self.model.parameters()).device

    @property
    def max_tokens(self) -> int:
        """The model's context length (DEFAULT_MAX_TOKENS when missing or absurd), less the
        positions a defensive prompt prepended to every input takes (safeguards.DefendedModel)."""
        return context_length(self.model.config) - getattr(self.model, "n_virtual", 0)


def check_fingerprint(recorded: dict, loaded: LoadedModel, what: str, advice: str) -> None:
    """ModelError naming both weight fingerprints when ``loaded`` is not the model an artefact
    (``what``: "the detector", "the defence") records as ``{"name", "fingerprint"}``."""
    if loaded.fingerprint != recorded["fingerprint"]:
        raise ModelError(
            f"{what} was trained on base model {recorded['name']!r} with weight fingerprint "
            f"{recorded['fingerprint']}, but the given model {loaded.name!r} has fingerprint "
            f"{loaded.fingerprint}; {advice}")


def context_length(config) -> int:
    """Context length from a transformers config (several attribute names are in use)."""
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and 0 < value <= _ABSURD_CONTEXT:
            return value
    return DEFAULT_MAX_TOKENS


def weights_fingerprint(model) -> str:
    """Content hash (16 hex chars) of names, shapes, dtypes and a strided sample of each parameter.

    At most 32768 evenly strided elements per tensor are hashed (as float32, on the CPU), so it
    stays fast for big models; tied weights count once.
    """
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}\n".encode())
        if param.device.type == "meta" or param.numel() == 0:
            continue
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
        sample = flat[::step][:_SAMPLES_PER_TENSOR].to(device="cpu", dtype=torch.float32)
        digest.update(sample.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def require_chat_template(loaded: LoadedModel) -> None:
    """Raise a ModelError naming the model when its tokenizer has no chat template."""
    if not getattr(loaded.tokenizer, "chat_template", None):
        raise ModelError(
            f"model {loaded.name!r} has no chat template (it is a base model); "
            "use an aligned/chat model such as smollm2-135m-instruct"
        )


# ---------------------------------------------------------------- options


def resolve_device(device: str) -> str:
    """cpu | cuda | auto (cuda when available) -> a concrete device name."""
    if device not in DEVICES:
        raise ModelError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    return device


def resolve_dtype(dtype: str) -> torch.dtype:
    """float32 | bfloat16 | float16 -> torch dtype."""
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}") from None


def quantization_config(kind: str | None, dtype: torch.dtype):
    """A BitsAndBytesConfig for "8bit"/"4bit" (None for None); needs bitsandbytes installed."""
    if kind not in QUANTIZATIONS:
        raise ModelError(f"unknown quantization {kind!r}; choose 8bit, 4bit or none")
    if kind is None:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelError(
            f"{kind} quantization needs bitsandbytes: install mia-tuner[quantization] ({exc})"
        ) from exc
    from transformers import BitsAndBytesConfig

    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype)


# ---------------------------------------------------------------- resolution


@dataclass
class _Source:
    """Where from_pretrained should look: a directory or hub id, maybe with a GGUF file in it."""

    location: str
    gguf_file: str | None = None
    is_hub: bool = False
    offline: bool = False  # a prepared offline copy: its tokenizer loads by the fast path


def _looks_like_path(name: str) -> bool:
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.lower().endswith(".gguf")
        or not _HUB_ID.match(name)
    )


def resolve_source(config: ModelConfig, cache_dir=None) -> tuple[_Source | None, list[str]]:
    """Find where ``config.name`` lives; also return what was tried (for error messages)."""
    name, tried = config.name, []
    if name in offline.REGISTRY:
        return _Source(str(offline.prepare(name, cache_dir)), offline=True), tried
    tried.append(f"not an offline model (known: {', '.join(sorted(offline.REGISTRY))})")
    path = Path(name).expanduser()
    if path.is_dir():
        if config.gguf_file and not (path / config.gguf_file).is_file():
            tried.append(f"directory {path} has no GGUF file {config.gguf_file!r}")
            return None, tried
        return _Source(str(path), config.gguf_file), tried
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _Source(str(path.parent), path.name), tried
    if path.is_file():
        tried.append(f"{path} is a file but not a .gguf file")
        return None, tried
    tried.append(f"no local directory or .gguf file at {str(path)!r}")
    if _looks_like_path(name):
        tried.append("not a hub id")
        return None, tried
    return _Source(name, config.gguf_file, is_hub=True), tried


def _fail(name: str, tried: list[str], extra: str | None = None) -> ModelError:
    lines = [f"could not load model {name!r}; tried:"] + [f"  - {item}" for item in tried]
    if extra:
        lines.append(f"  - {extra}")
    return ModelError("\n".join(lines))


def load_tokenizer(location: str, gguf_file: str | None = None, fast_path: bool = False, **kwargs):
    """AutoTokenizer with a pad token (eos, else bos/unk) and right padding.

    ``fast_path`` builds a plain PreTrainedTokenizerFast straight from tokenizer.json and
    tokenizer_config.json: the same tokens for the offline copies, but seconds faster for
    Gemma's 262k-token vocabulary than AutoTokenizer's model-specific class. Other keyword
    arguments (e.g. local_files_only) go to AutoTokenizer.from_pretrained.
    """
    if fast_path:
        tokenizer = _tokenizer_from_files(Path(location))
    else:
        from transformers import AutoTokenizer

        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.bos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelError(f"tokenizer of {location!r} has no pad, eos, bos or unk token to pad with")
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"
    return tokenizer


# not constructor arguments; `added_tokens_decoder` (written by transformers 4) repeats what
# tokenizer.json holds, as plain dicts that transformers 4's constructor cannot take
_NOT_INIT_KWARGS = ("tokenizer_class", "backend", "is_local", "local_files_only", "auto_map", "name_or_path",
                    "added_tokens_decoder")


def _tokenizer_from_files(directory: Path):
    """PreTrainedTokenizerFast from tokenizer.json + tokenizer_config.json (+ chat_template.jinja)."""
    from transformers import PreTrainedTokenizerFast

    config = json.loads((directory / "tokenizer_config.json").read_text("utf-8"))
    kwargs = {key: value for key, value in config.items() if key not in _NOT_INIT_KWARGS}
    template = directory / "chat_template.jinja"
    if template.is_file():
        kwargs["chat_template"] = template.read_text("utf-8")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), **kwargs)
    tokenizer.name_or_path = str(directory)
    return tokenizer


def _model_kwargs(config: ModelConfig, device: str, dtype: torch.dtype) -> dict:
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": bool(config.trust_remote_code)}
    quant = quantization_config(config.quantization, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = config.device_map or {"": device}
    elif config.device_map:
        kwargs["device_map"] = config.device_map
    return kwargs


def local_source(config: ModelConfig, cache_dir=None) -> _Source | None:
    """Where ``config`` lives on this machine (a hub id: its copy in the local Hugging Face
    cache), or None when it does not (yet); nothing is downloaded."""
    from huggingface_hub import snapshot_download

    source, _ = resolve_source(config, cache_dir)
    if source is None or not source.is_hub:
        return source
    try:
        return _Source(snapshot_download(source.location, local_files_only=True), source.gguf_file)
    except Exception:  # noqa: BLE001 - not on this machine: nothing to describe
        return None


def _hub_cache_copy(source: _Source) -> _Source:
    """A hub id's copy in the local Hugging Face cache, for when the hub cannot be reached
    (OSError saying why, instead of retrying for a minute)."""
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(source.location, local_files_only=True)
    except Exception as exc:
        reason = hub_unreachable() or "the hub is not asked"
        raise OSError(f"{reason}, and {source.location!r} is not in the local Hugging Face cache") from exc
    return _Source(local, source.gguf_file)


def _from_pretrained(source: _Source, kwargs: dict):
    """Model and tokenizer from a resolved source (separate so tests can stub the hub).

    When the hub cannot be reached, a hub id is looked up in the local Hugging Face cache only
    (instead of retrying for a minute) and loaded from there.
    """
    from transformers import AutoModelForCausalLM

    if source.gguf_file:
        kwargs = {**kwargs, "gguf_file": source.gguf_file}
    if source.is_hub and hub_unreachable():
        return _from_pretrained(_hub_cache_copy(source), kwargs)
    model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    tokenizer = load_tokenizer(source.location, source.gguf_file, fast_path=source.offline,
                               trust_remote_code=kwargs["trust_remote_code"])
    return model, tokenizer


def _custom_code_hint(source: _Source, config: ModelConfig) -> str | None:
    """Why a local model that ships its own code did not load, when that is the reason."""
    path = Path(source.location) / "config.json"
    if config.trust_remote_code or source.is_hub or not path.is_file():
        return None
    try:
        ships_code = "auto_map" in json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not ships_code:
        return None
    return ("this model ships its own Python code (auto_map in config.json); mia-tuner runs such "
            "code only when you pass --trust-remote-code, after reading it")


def _damaged_weights(source: _Source) -> str | None:
    """``"<file>: <reason>"`` for the first safetensors file of a local model folder whose
    header cannot be read (cut short, overwritten), else None."""
    if source.is_hub:
        return None
    from safetensors import safe_open

    for file in sorted(Path(source.location).glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # noqa: BLE001 - SafetensorError and OSError alike
            return f"{file}: {' '.join(str(exc).split())}"
    return None


def load_tokenizer_of(config: ModelConfig, cache_dir=None):
    """The tokenizer of ``config.name`` alone (no weights loaded)."""
    source, tried = resolve_source(config, cache_dir)
    if source is None:
        raise _fail(config.name, tried)
    try:
        if source.is_hub and hub_unreachable():
            source = _hub_cache_copy(source)
        return load_tokenizer(source.location, source.gguf_file, fast_path=source.offline,
                              trust_remote_code=bool(config.trust_remote_code))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported with its cause
        where = "the Hugging Face hub" if source.is_hub else source.location
        raise _fail(config.name, [*tried, f"loading its tokenizer from {where}: {type(exc).__name__}: {exc}"],
                    _custom_code_hint(source, config)) from exc


_PROBE = "Membership inference, 2024: naïve café — ünïcode & digits 0123456789!"


_MATCHES: dict[tuple, bool] = {}  # per process: a run asks several times


def tokenizers_match(first: ModelConfig, second: ModelConfig, cache_dir=None) -> bool:
    """Whether two models split every text into the same ids (same vocabulary, same special
    tokens on a probe text): what token-by-token comparisons of their statistics need."""
    key = (first.name, first.gguf_file, second.name, second.gguf_file, str(cache_dir))
    if key not in _MATCHES:
        a, b = load_tokenizer_of(first, cache_dir), load_tokenizer_of(second, cache_dir)
        probe = [t(_PROBE, add_special_tokens=True)["input_ids"] for t in (a, b)]
        _MATCHES[key] = probe[0] == probe[1] and a.get_vocab() == b.get_vocab()
    return _MATCHES[key]


def load_model(config: ModelConfig | str, cache_dir=None) -> LoadedModel:
    """Load ``config.name`` (see resolve_source for the order) as an eval-mode LoadedModel."""
    if isinstance(config, str):
        config = ModelConfig(name=config)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype)
    kwargs = _model_kwargs(config, device, dtype)
    source, tried = resolve_source(config, cache_dir)
    if source is None:
        raise _fail(config.name, tried)
    try:
        model, tokenizer = _from_pretrained(source, kwargs)
    except ModelError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors, ...
        if damaged := _damaged_weights(source):
            raise ModelError(f"could not load model {config.name!r}: its weights file {damaged} "
                             "(the file is damaged or cut short: copy or save the model again)") from exc
        where = "the Hugging Face hub" if source.is_hub else source.location
        tried.append(f"loading from {where}: {type(exc).__name__}: {exc}")
        raise _fail(config.name, tried, _custom_code_hint(source, config)) from exc
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    kind = "aligned" if getattr(tokenizer, "chat_template", None) else "base"
    return LoadedModel(model, tokenizer, config.name, weights_fingerprint(model), kind)
