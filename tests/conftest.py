"""Shared fixtures."""

import shutil
from pathlib import Path

import pytest
from helpers import labelled_rows, make_tiny_model_dir, write_jsonl


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A directory with a tiny random Llama and a byte-level BPE tokenizer (no chat template)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory):
    """Like tiny_model_dir, with a chat template."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-chat-model"), with_chat_template=True)


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory, tiny_chat_model_dir):
    """A detector trained for one epoch on the tiny chat model (copied per test: `detector`)."""
    from mia_tuner.cli import main

    root = tmp_path_factory.mktemp("detector")
    data = write_jsonl(root / "set.jsonl", labelled_rows())
    rc = main(["train", "--model", str(tiny_chat_model_dir), "--data", str(data), "--device", "cpu",
               "--epochs", "1", "--batch-per-class", "2", "--train-per-class", "8",
               "--test-per-class", "2", "--validation-per-class", "2", "--num-virtual-tokens", "4",
               "--no-compare", "--cache-dir", str(root / "cache"), "--out", str(root / "run")])
    assert rc == 0
    return root / "run" / "detector"


@pytest.fixture
def detector(trained_detector, tmp_path) -> Path:
    """A fresh copy of the trained detector, free to damage."""
    copy = tmp_path / "detector"
    shutil.copytree(trained_detector, copy)
    return copy
