"""What a defence costs: the model's behaviour before and after it, on text no attack used.

* perplexity on held-out general text (``general_text()``: paragraphs shipped with the
  package, written for it, on everyday topics unlike any benchmark set);
* agreement with the undefended model: mean KL divergence of the next-token distributions
  over that text (nats per token), and for a chat model the share of identical greedy
  answers to ordinary prompts (``ordinary_prompts()``, shipped too);
* multiple-choice accuracy by option log-likelihood on MMLU-layout questions (``mmlu``).

Every measure compares the model with and without its defence (``undefended``), so a LoRA
defence is measured before it is merged; ``perplexity_and_kl`` and ``greedy_agreement`` can
compare it with another model instead (``original=``: the model before a controlled set's
injection, in ``bench/safeguard_floor.py``).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources

import torch

from mia_tuner.errors import ModelError
from mia_tuner.models.batching import pad_batch
from mia_tuner.training import chunked
from mia_tuner.tuner.pipelines import mean_nll_from_hidden
from mia_tuner.tuner.peft_setup import forward_logits
from mia_tuner.safeguards.defended import undefended

ANSWER_TOKENS = 24  # greedy tokens compared per ordinary prompt


def _resource_lines(name: str) -> str:
    return resources.files("mia_tuner.resources").joinpath(name).read_text("utf-8")


def general_text() -> list[str]:
    """The shipped held-out general-text paragraphs."""
    return [p.strip() for p in _resource_lines("general_text.txt").split("\n\n") if p.strip()]


def ordinary_prompts() -> list[str]:
    """The shipped ordinary prompts (one per line)."""
    return [line.strip() for line in _resource_lines("ordinary_prompts.txt").splitlines() if line.strip()]


@dataclass
class Utility:
    """Utility measures of a defended model against its undefended self (or another original)."""

    ppl_before: float
    ppl_after: float
    kl: float  # mean KL(undefended ‖ defended) per next-token position, nats
    n_tokens: int
    greedy_agreement: float | None = None  # share of identical greedy answers (chat models)
    n_prompts: int = 0
    mmlu_before: float | None = None
    mmlu_after: float | None = None
    n_questions: int = 0

    @property
    def ppl_change(self) -> float:
        """Relative change of perplexity (0.03 = 3% higher after the defence)."""
        return self.ppl_after / self.ppl_before - 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "ppl_change": self.ppl_change}


def _hidden(model, ids, mask):
    with chunked.hidden_states_out(model) as head:
        hidden = forward_logits(model, ids, mask)
    return hidden, head


def _vocabulary(model) -> int:
    return chunked.OutputHead(model).layer.weight.shape[0]


@contextmanager
def _original_of(model, original):
    """The model to compare with: ``original`` where given, else ``model`` without its defence."""
    if original is not None:
        yield original
    else:
        with undefended(model) as plain:
            yield plain


@torch.inference_mode()
def perplexity_and_kl(model, tokenizer, texts: list[str], max_tokens: int = 256,
                      batch_size: int = 4, original=None) -> tuple[float, float, float, int]:
    """(perplexity of the original, of ``model``, mean KL(original ‖ model) per position,
    positions counted). The original is ``model`` without its defence, or ``original``: another
    model over the same tokenizer (the model before a controlled set's injection, say)."""
    if original is not None and _vocabulary(original) != _vocabulary(model):
        raise ModelError(f"the two models' vocabularies differ ({_vocabulary(original)} and {_vocabulary(model)} "
                         "tokens): their next-token distributions cannot be compared")
    device = next(model.parameters()).device
    nll_sums = {"before": 0.0, "after": 0.0}
    kl_sum, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        encoded = [tokenizer(t, add_special_tokens=True)["input_ids"][:max_tokens]
                   for t in texts[start:start + batch_size]]
        ids, mask = (x.to(device) for x in pad_batch(encoded, tokenizer.pad_token_id))
        targets = (mask[:, 1:] != 0).sum(1)
        after, head = _hidden(model, ids, mask)
        with _original_of(model, original) as reference:
            before, head_before = _hidden(reference, ids, mask)
        for name, hidden, h in (("before", before, head_before), ("after", after, head)):
            nll_sums[name] += float((mean_nll_from_hidden(hidden, h, ids, mask).double() * targets).sum())
        kl = chunked.token_kl(after[:, :-1], before[:, :-1], head, head_reference=head_before)
        kl_sum += float((kl.double() * (mask[:, 1:] != 0)).sum())
        count += int(targets.sum())
    return (math.exp(nll_sums["before"] / count), math.exp(nll_sums["after"] / count),
            kl_sum / count, count)


@torch.inference_mode()
def greedy_answer(model, tokenizer, prompt: str, n_tokens: int = ANSWER_TOKENS) -> list[int]:
    """The greedy continuation (token ids) of ``prompt`` in the chat template."""
    messages = [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    device = next(model.parameters()).device
    answer: list[int] = []
    for _ in range(n_tokens):
        current = torch.tensor([ids + answer], device=device)
        logits = model(input_ids=current, attention_mask=torch.ones_like(current), logits_to_keep=1).logits
        token = int(logits[0, -1].argmax())
        answer.append(token)
        if token == tokenizer.eos_token_id:
            break
    return answer


def greedy_agreement(model, tokenizer, prompts: list[str], original=None) -> float:
    """Share of ``prompts`` whose greedy answer is identical with and without the defence (or,
    given ``original``, under ``model`` and under ``original``)."""
    same = 0
    for prompt in prompts:
        after = greedy_answer(model, tokenizer, prompt)
        with _original_of(model, original) as reference:
            before = greedy_answer(reference, tokenizer, prompt)
        same += after == before
    return same / len(prompts)


def measure_utility(model, tokenizer, *, texts: list[str] | None = None, prompts: list[str] | None = None,
                    questions=None, max_tokens: int = 256, original=None) -> Utility:
    """Every utility measure of ``model`` (a defended model whose defence ``undefended`` can
    switch off), or of ``model`` against ``original``, another model of the same vocabulary
    (the perfect defence's floor: the model before injection against the injected one).
    Greedy agreement only where the tokenizer has a chat template; MMLU only when
    ``questions`` are given (``mmlu.load_questions``)."""
    from mia_tuner.safeguards import mmlu

    texts = texts or general_text()
    ppl_before, ppl_after, kl, n = perplexity_and_kl(model, tokenizer, texts, max_tokens, original=original)
    utility = Utility(ppl_before=ppl_before, ppl_after=ppl_after, kl=kl, n_tokens=n)
    if getattr(tokenizer, "chat_template", None):
        prompts = prompts or ordinary_prompts()
        utility.greedy_agreement = greedy_agreement(model, tokenizer, prompts, original=original)
        utility.n_prompts = len(prompts)
    if questions:
        utility.mmlu_after = mmlu.accuracy(model, tokenizer, questions)
        with _original_of(model, original) as before:
            utility.mmlu_before = mmlu.accuracy(before, tokenizer, questions)
        utility.n_questions = len(questions)
    return utility
