"""Tests of mia_tuner.tuner.prompts on the tiny tokenizer (and SmolLM2's, when fetched)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_tiny_tokenizer

from mia_tuner.errors import ModelError
from mia_tuner.tuner import prompts as P

TEXT = "The quick brown fox jumps over the lazy dog."
SMOLLM2_DIR = Path("/root/.cache/mia-tuner/models/smollm2-135m-instruct/hf")


@pytest.fixture(scope="module")
def chat_tokenizer():
    """The tiny tokenizer with helpers.CHAT_TEMPLATE."""
    return make_tiny_tokenizer(with_chat_template=True)


def _manual(tokenizer, rendered: str) -> list[int]:
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def _question(text: str) -> str:
    return f"Please tell me whether the given example is used in the training dataset: \n{text}"


def test_constants():
    assert P.INSTRUCTION.format(text="abc").endswith("dataset: \nabc")
    assert P.INIT_TEXT.startswith("Here is the prefix of a training set text")


def test_user_prompt_ids_match_manual_rendering(chat_tokenizer):
    expected = _manual(chat_tokenizer, f"<|user|>{_question(TEXT)}<|end|>\n<|assistant|>")
    assert P.user_prompt_ids(chat_tokenizer, TEXT) == expected
    rendered = f"<|system|>Be brief.<|end|>\n<|user|>{_question(TEXT)}<|end|>\n<|assistant|>"
    with_system = _manual(chat_tokenizer, rendered)
    assert P.user_prompt_ids(chat_tokenizer, TEXT, system_prompt="Be brief.") == with_system
    assert P.injected_system_prompt(chat_tokenizer) is None


def test_no_chat_template_is_a_model_error():
    tokenizer = make_tiny_tokenizer(with_chat_template=False)
    with pytest.raises(ModelError, match="--chat-template NAME"):
        P.user_prompt_ids(tokenizer, TEXT)
    with pytest.raises(ModelError, match="chatml"):
        P.resolve_answer_tokens(tokenizer)


def test_answer_tokens_are_distinct_and_match_manual_tokenization(chat_tokenizer):
    yes_id, no_id = P.resolve_answer_tokens(chat_tokenizer)
    assert yes_id != no_id
    prompt = f"<|user|>{_question('x')}<|end|>\n<|assistant|>"
    n = len(_manual(chat_tokenizer, prompt))
    assert _manual(chat_tokenizer, prompt + "Yes<|end|>\n")[n] == yes_id
    assert _manual(chat_tokenizer, prompt + "No<|end|>\n")[n] == no_id
    assert "Yes".startswith(chat_tokenizer.decode([yes_id]))
    assert "No".startswith(chat_tokenizer.decode([no_id]))


def test_same_first_token_fails_loudly(chat_tokenizer):
    with pytest.raises(ModelError, match="same token"):
        P.resolve_answer_tokens(chat_tokenizer, yes="Yes", no="Yeah")


@pytest.mark.parametrize("is_member", [True, False])
def test_training_example_answer_start(chat_tokenizer, is_member):
    ids, start = P.training_example_ids(chat_tokenizer, TEXT, is_member)
    yes_id, no_id = P.resolve_answer_tokens(chat_tokenizer)
    prompt = P.user_prompt_ids(chat_tokenizer, TEXT)
    answer = "Yes" if is_member else "No"
    assert ids[:start] == prompt and start == len(prompt)
    assert ids[start] == (yes_id if is_member else no_id)
    assert ids == _manual(chat_tokenizer, f"<|user|>{_question(TEXT)}<|end|>\n<|assistant|>{answer}<|end|>\n")
    assert P.scoring_prompt_ids(chat_tokenizer, TEXT) == prompt


def test_long_answer_and_system_prompt_options(chat_tokenizer):
    ids, start = P.training_example_ids(chat_tokenizer, TEXT, False, system_prompt="S", long_answer=True)
    _, no_id = P.resolve_answer_tokens(chat_tokenizer)
    assert ids[start] == no_id
    assert ids[:start] == P.user_prompt_ids(chat_tokenizer, TEXT, system_prompt="S")
    assert chat_tokenizer.decode(ids[start:]).startswith("No, the example is not used")


@pytest.mark.parametrize("name", sorted(P.FALLBACK_TEMPLATES))
def test_fallback_templates_on_a_template_less_tokenizer(name):
    tokenizer = P.apply_fallback_template(make_tiny_tokenizer(with_chat_template=False), name)
    yes_id, no_id = P.resolve_answer_tokens(tokenizer)
    assert yes_id != no_id
    for is_member, class_id in ((True, yes_id), (False, no_id)):
        ids, start = P.training_example_ids(tokenizer, TEXT, is_member)
        assert ids[start] == class_id
        assert ids[:start] == P.scoring_prompt_ids(tokenizer, TEXT)
    rendered = tokenizer.apply_chat_template(P.build_messages(TEXT, "SYS", "Yes"), tokenize=False)
    assert "SYS" in rendered and _question(TEXT) in rendered and "Yes" in rendered


def test_unknown_fallback_template_lists_the_options():
    with pytest.raises(ModelError, match="chatml.*gemma.*llama-2.*plain.*zephyr"):
        P.apply_fallback_template(make_tiny_tokenizer(), "vicuna")


def test_injected_system_prompt_is_detected():
    template = (
        "{% if messages[0]['role'] != 'system' %}<|system|>Default helper.<|end|>\n{% endif %}"
        "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = template
    assert P.injected_system_prompt(tokenizer) == "Default helper."
    described = P.describe_prompt_format(tokenizer)
    assert described["injected_system_prompt"] == "Default helper."
    assert described["scoring_prompt_is_user_prompt"] is True


@pytest.mark.integration
@pytest.mark.skipif(not SMOLLM2_DIR.is_dir(), reason="run `mia-tuner models fetch smollm2-135m-instruct`")
def test_smollm2_answer_tokens():
    from mia_tuner.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(SMOLLM2_DIR), fast_path=True)
    yes_id, no_id = P.resolve_answer_tokens(tokenizer)
    assert (tokenizer.decode([yes_id]), tokenizer.decode([no_id])) == ("Yes", "No")
    # SmolLM2's template writes its default system prompt when none is given
    assert P.injected_system_prompt(tokenizer).startswith("You are a helpful AI assistant named SmolLM")
    ids, start = P.training_example_ids(tokenizer, TEXT, True)
    assert ids[start] == yes_id and ids[:start] == P.user_prompt_ids(tokenizer, TEXT)
