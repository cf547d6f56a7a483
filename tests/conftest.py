"""Shared fixtures."""

import pytest
from helpers import make_tiny_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A directory with a tiny random Llama and a byte-level BPE tokenizer (no chat template)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory):
    """Like tiny_model_dir, with a chat template."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-chat-model"), with_chat_template=True)
