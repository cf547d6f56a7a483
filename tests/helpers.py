"""Test helpers: a tiny random causal LM with an offline-built tokenizer (no downloads)."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Membership inference asks whether a text was in the training data.",
    "Large language models memorise some of their pre-training corpus.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "0123456789 !?.,;:'\"()[]{}-_/+*=<>@#$%&",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|end|>"]


def make_tiny_tokenizer(with_chat_template: bool = False):
    """A byte-level BPE tokenizer (encodes any text) trained in memory on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    if with_chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_model(vocab_size: int, seed: int = 0):
    """A 2-layer Llama with hidden size 32 and random weights (deterministic per seed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def make_tiny_model_dir(path, with_chat_template: bool = False, seed: int = 0) -> Path:
    """Save a tiny model + tokenizer into ``path`` (loadable by mia_tuner.models.load_model)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tiny_tokenizer(with_chat_template)
    model = make_tiny_model(len(tokenizer), seed=seed)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path, rows) -> Path:
    """Rows as a JSONL file (one JSON object a line)."""
    import json

    path = Path(path)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def labelled_rows(n: int = 10) -> list[dict]:
    """``n`` members and ``n`` non-members, alternating, each text distinct."""
    rows = []
    for i in range(n):
        rows.append({"input": f"The cat number {i} sat on the mat and looked at the dog.", "label": 1})
        rows.append({"input": f"A bird called {i} flew over the park near the river.", "label": 0})
    return rows


def make_custom_code_model_dir(source, dest) -> Path:
    """A copy of a tiny model folder whose config asks for model code of its own (which, if
    ever run, would end the process)."""
    import json
    import shutil

    dest = Path(dest)
    shutil.copytree(source, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(model_type="evil-llama", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "modeling_evil.py").write_text("raise SystemExit('custom code ran')\n")
    return dest



def tiny_loaded(chat: bool, seed: int = 0):
    """A LoadedModel around a fresh tiny model (same seed -> same weights and fingerprint)."""
    from mia_tuner.models.loading import LoadedModel, weights_fingerprint

    tokenizer = make_tiny_tokenizer(with_chat_template=chat)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model = make_tiny_model(len(tokenizer), seed=seed)
    return LoadedModel(model, tokenizer, f"tiny-{seed}", weights_fingerprint(model),
                       "aligned" if chat else "base")
