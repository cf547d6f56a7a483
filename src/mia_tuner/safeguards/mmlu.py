"""Multiple-choice accuracy by option log-likelihood, on questions in the MMLU layout.

A local source is a CSV file, or a folder of them, in the layout of the original MMLU release
(no header; question, four options, answer letter A-D). A hub name (``cais/mmlu``) is read with
``datasets`` where the hub is reachable (fields ``question``, ``choices``, ``answer``).
Each option is scored by the summed log-likelihood of `` <option>`` after
``Question: <q>\\nAnswer:``; the prediction is the option with the highest.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from mia_tuner.data.loading import read_text_file
from mia_tuner.errors import DataError
from mia_tuner.models.batching import pad_batch

LETTERS = "ABCD"


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    answer: int  # index into choices


def _row_question(row: list[str], where: str) -> Question:
    if len(row) != 6:
        raise DataError(f"{where}: an MMLU row has 6 fields (question, A, B, C, D, answer), got {len(row)}")
    letter = row[5].strip().upper()
    if letter not in LETTERS:
        raise DataError(f"{where}: the answer must be one of A-D, got {row[5]!r}")
    return Question(row[0], tuple(row[1:5]), LETTERS.index(letter))


def _read_csv(path: Path) -> list[Question]:
    rows = csv.reader(io.StringIO(read_text_file(path), newline=""))
    return [_row_question(row, f"{path} row {i + 1}") for i, row in enumerate(rows) if row]


def load_questions(source: str, limit: int | None = None, split: str = "test") -> list[Question]:
    """Questions from a CSV file, a folder of CSV files (sorted by name), or a hub dataset."""
    path = Path(source)
    if path.is_file():
        questions = _read_csv(path)
    elif path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise DataError(f"{path} holds no .csv files in the MMLU layout")
        questions = [q for f in files for q in _read_csv(f)]
    else:
        from datasets import load_dataset

        try:
            rows = load_dataset(source, "all", split=split)
        except Exception as error:  # offline, or not a dataset: say what was tried
            raise DataError(f"{source} is neither a local MMLU-layout file or folder nor a reachable "
                            f"hub dataset ({type(error).__name__}: {error})") from None
        questions = [Question(r["question"], tuple(r["choices"]), int(r["answer"])) for r in rows]
    if not questions:
        raise DataError(f"{source} holds no questions")
    return questions[:limit] if limit else questions


@torch.inference_mode()
def option_loglikelihoods(model, tokenizer, question: Question) -> list[float]:
    """Summed log-likelihood of each option's tokens after the question prompt."""
    prompt = list(tokenizer(f"Question: {question.question}\nAnswer:", add_special_tokens=True)["input_ids"])
    options = [list(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in question.choices]
    ids, mask = pad_batch([prompt + o for o in options], tokenizer.pad_token_id)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    totals = []
    for row, option in enumerate(options):
        positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(option), device=device)
        targets = torch.tensor(option, device=device)
        totals.append(float(logprobs[row, positions, targets].sum()))
    return totals


def accuracy(model, tokenizer, questions: list[Question]) -> float:
    """Share of questions whose highest-likelihood option is the answer."""
    right = 0
    for question in questions:
        scores = option_loglikelihoods(model, tokenizer, question)
        right += max(range(len(scores)), key=scores.__getitem__) == question.answer
    return right / len(questions)
