"""Pipeline A's inputs: the membership question in the model's chat template, and its answers.

Conventions:

* Text is rendered with ``tokenizer.apply_chat_template(..., tokenize=False)`` and tokenized with
  ``add_special_tokens=False`` (as transformers does for chat templates: the template itself
  writes any BOS token).
* The prompt is one user turn, no system prompt by default, with the generation prompt.
  Some templates insert a default system prompt when none is given: SmolLM2-Instruct's writes
  ``You are a helpful AI assistant named SmolLM, trained by Hugging Face``. We keep the
  template's behaviour (that is what the model saw in alignment); ``injected_system_prompt``
  reports it so runs can record it.
* ``answer_start`` is the index, in the returned ``input_ids``, of the first answer token; the
  answer position (whose output predicts it) is ``answer_start - 1``. When the template's prompt
  tokenizes as a prefix of the full conversation (ChatML, SmolLM2, the test template...),
  ``input_ids[:answer_start] == user_prompt_ids(...)``. Otherwise the two are diffed and the
  answer starts at the first differing token; use ``scoring_prompt_ids`` at test time so that
  the model sees exactly the prefix it was trained on.
"""

from __future__ import annotations

import logging
from typing import Any

from mia_tuner.errors import ModelError

log = logging.getLogger(__name__)

INSTRUCTION = "Please tell me whether the given example is used in the training dataset: \n{text}"
INIT_TEXT = (
    "Here is the prefix of a training set text, please verbatim generate the subsequent tokens:"
)
YES, NO = "Yes", "No"
LONG_YES = "Yes, the example is used in the training dataset."
LONG_NO = "No, the example is not used in the training dataset."
_PROBE_TEXT = "An example text."  # user text used where the answer tokens must be found
_SYSTEM_PROBE = "SYSTEM-PROMPT-PROBE"

# Chat templates for tokenizers that have none, chosen explicitly by name (--chat-template NAME).
# chatml/zephyr/plain write no BOS token; gemma and llama-2 write the tokenizer's BOS like
# their families' official templates.
FALLBACK_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama-2": (
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
        "{% set turns = messages[1:] %}"
        "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
        "{% for message in turns %}"
        "{% if message['role'] == 'user' %}"
        "{{ (bos_token or '') + '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ ' ' + message['content'] + ' ' + (eos_token or '') }}"
        "{% endif %}{% endfor %}"
    ),
    "gemma": (
        "{{ bos_token or '' }}"
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
        "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
        "{% for message in turns %}"
        "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n'"
        " + (system if loop.first else '') + message['content'] + '<end_of_turn>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
    ),
    "zephyr": (
        "{% for message in messages %}"
        "{{ '<|' + message['role'] + '|>\\n' + message['content'] + (eos_token or '') + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    ),
    "plain": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
        "{% else %}{{ 'Assistant: ' + message['content'] + (eos_token or '') + '\\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    ),
}


# ---------------------------------------------------------------- templates


def _template_names() -> str:
    """The fallback template names, comma-separated (for messages)."""
    return ", ".join(sorted(FALLBACK_TEMPLATES))


def apply_fallback_template(tokenizer, name: str):
    """Give ``tokenizer`` the fallback chat template ``name`` (replacing any it has); return it."""
    if name not in FALLBACK_TEMPLATES:
        raise ModelError(f"unknown chat template {name!r}; choose one of {_template_names()}")
    if getattr(tokenizer, "chat_template", None):
        log.info("replacing the tokenizer's own chat template with the fallback %r", name)
    tokenizer.chat_template = FALLBACK_TEMPLATES[name]
    return tokenizer


def require_template(tokenizer) -> None:
    """Raise a ModelError naming the fix (``--chat-template NAME``) when there is no template."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ModelError(
            f"tokenizer {name!r} has no chat template, which MIA-Tuner's aligned pipeline needs; "
            f"pick one by name with --chat-template NAME ({_template_names()}) "
            "or use the base-model pipeline"
        )


def build_messages(text: str, system_prompt: str | None = None, answer: str | None = None) -> list[dict]:
    """The conversation: [system], user (INSTRUCTION with ``text``), [assistant ``answer``]."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    messages.append({"role": "user", "content": INSTRUCTION.format(text=text)})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    """The template's text for ``messages``; template errors become ModelErrors."""
    require_template(tokenizer)
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:  # jinja2 TemplateError, raise_exception(...) of the template
        roles = "/".join(message["role"] for message in messages)
        raise ModelError(f"the chat template failed on a {roles} conversation: {exc}") from exc


def _encode(tokenizer, text: str) -> list[int]:
    """Token ids of rendered template text (no extra special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def injected_system_prompt(tokenizer) -> str | None:
    """The system prompt the template writes when none is given (None when it writes none).

    Found by rendering a user turn with a probe system prompt and without: if the render without
    is the render with the probe replaced by some string D, D is returned (SmolLM2: its default
    "You are a helpful AI assistant named SmolLM, ..."). Templates that reject a system role
    give None.
    """
    without = _render(tokenizer, build_messages(_PROBE_TEXT), add_generation_prompt=True)
    try:
        with_probe = _render(tokenizer, build_messages(_PROBE_TEXT, _SYSTEM_PROBE), True)
    except ModelError:
        return None
    if with_probe.count(_SYSTEM_PROBE) != 1:
        return None
    before, after = with_probe.split(_SYSTEM_PROBE)
    if without.startswith(before) and without.endswith(after) and len(without) >= len(before) + len(after):
        return without[len(before) : len(without) - len(after)]
    return None


# ---------------------------------------------------------------- ids


def user_prompt_ids(tokenizer, text: str, system_prompt: str | None = None) -> list[int]:
    """Ids of the membership question about ``text`` as one user turn + the generation prompt.

    No system prompt unless given (the template may still inject its default one: see
    ``injected_system_prompt``). ModelError when the tokenizer has no chat template.
    """
    return _encode(tokenizer, _render(tokenizer, build_messages(text, system_prompt), True))


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    """Number of leading ids ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def answer_split(
    tokenizer, text: str, answer: str, system_prompt: str | None = None
) -> tuple[list[int], int]:
    """Ids of the conversation with the assistant ``answer``, and the index of its first token.

    The index is ``len(user_prompt_ids)`` when those ids are a prefix of the conversation's ids;
    otherwise (the prompt tokenizes differently alone) the first index where the two differ.
    Whitespace-only tokens there (a separator the template writes before the answer) are
    skipped: the index is that of the first token with visible text.
    """
    prompt = user_prompt_ids(tokenizer, text, system_prompt)
    full = _encode(tokenizer, _render(tokenizer, build_messages(text, system_prompt, answer), False))
    if full[: len(prompt)] == prompt and len(full) > len(prompt):
        start = len(prompt)
    else:
        start = _common_prefix_length(prompt, full)
        log.warning(
            "the generation prompt tokenizes differently inside the conversation; the answer %r "
            "starts at token %d of the conversation (the prompt alone has %d tokens)",
            answer, start, len(prompt),
        )
    start = _skip_whitespace_tokens(tokenizer, full, start)
    if start >= len(full):
        raise ModelError(f"the chat template writes no tokens for the assistant answer {answer!r}")
    return full, start


def _skip_whitespace_tokens(tokenizer, ids: list[int], start: int) -> int:
    """First index from ``start`` whose token is not pure whitespace.

    Templates such as llama-2 and plain write a space before the answer (``' ' + content``);
    with tokenizers that keep that space as its own token, it is template text, not the class
    token, and becomes part of the prompt (``scoring_prompt_ids`` includes it).
    """
    while start < len(ids) and not tokenizer.decode([ids[start]]).strip():
        start += 1
    return start


def _first_answer_token(tokenizer, answer: str, system_prompt: str | None) -> int:
    """The first token the template puts after the generation prompt for ``answer``."""
    full, start = answer_split(tokenizer, _PROBE_TEXT, answer, system_prompt)
    token = full[start]
    piece = tokenizer.decode([token]).strip()
    if not piece or not answer.startswith(piece):
        raise ModelError(
            f"the first answer token for {answer!r} decodes to {tokenizer.decode([token])!r}, "
            "which is not the start of the answer (the template merges it with its own text)"
        )
    return token


def resolve_answer_tokens(
    tokenizer, yes: str = YES, no: str = NO, system_prompt: str | None = None
) -> tuple[int, int]:
    """(yes_id, no_id): the first tokens the template puts after the prompt for each answer.

    ModelError when there is no chat template, when a first token is not the start of its
    answer, or when both answers start with the same token.
    """
    yes_id = _first_answer_token(tokenizer, yes, system_prompt)
    no_id = _first_answer_token(tokenizer, no, system_prompt)
    if yes_id == no_id:
        raise ModelError(
            f"the answers {yes!r} and {no!r} start with the same token "
            f"{tokenizer.decode([yes_id])!r}; they cannot be told apart at the answer position"
        )
    return yes_id, no_id


def answer_text(is_member: bool, long_answer: bool = False) -> str:
    """The assistant answer used in training: Yes/No, or the paper figure's sentence."""
    if long_answer:
        return LONG_YES if is_member else LONG_NO
    return YES if is_member else NO


def training_example_ids(
    tokenizer,
    text: str,
    is_member: bool,
    system_prompt: str | None = None,
    long_answer: bool = False,
) -> tuple[list[int], int]:
    """(input_ids, answer_start): prompt + assistant answer (+ the template's end-of-turn tokens).

    ``input_ids[answer_start]`` is the class token (the first token of "Yes"/"No"). With
    ``long_answer`` the answer is a sentence; ModelError if its first token is not the one the
    short answer starts with (the class token scored at test time).
    """
    ids, start = answer_split(tokenizer, text, answer_text(is_member, long_answer), system_prompt)
    if long_answer:
        short, short_start = answer_split(tokenizer, text, answer_text(is_member), system_prompt)
        if ids[start] != short[short_start]:
            raise ModelError(
                f"the long answer starts with token {tokenizer.decode([ids[start]])!r}, not with "
                f"the class token {tokenizer.decode([short[short_start]])!r}"
            )
    return ids, start


def scoring_prompt_ids(tokenizer, text: str, system_prompt: str | None = None) -> list[int]:
    """The ids to score at test time: what precedes the answer in training (answer position last).

    Equal to ``user_prompt_ids`` whenever the prompt tokenizes as a prefix of the conversation.
    """
    ids, start = answer_split(tokenizer, text, YES, system_prompt)
    return ids[:start]


def describe_prompt_format(tokenizer, system_prompt: str | None = None) -> dict[str, Any]:
    """What the run should record about the prompt: answer ids/tokens, injected system prompt."""
    yes_id, no_id = resolve_answer_tokens(tokenizer, system_prompt=system_prompt)
    prompt = user_prompt_ids(tokenizer, _PROBE_TEXT, system_prompt)
    return {
        "yes_id": yes_id,
        "no_id": no_id,
        "yes_token": tokenizer.convert_ids_to_tokens(yes_id),
        "no_token": tokenizer.convert_ids_to_tokens(no_id),
        "system_prompt": system_prompt,
        "injected_system_prompt": None if system_prompt is not None else injected_system_prompt(tokenizer),
        "scoring_prompt_is_user_prompt": scoring_prompt_ids(tokenizer, _PROBE_TEXT, system_prompt) == prompt,
    }
