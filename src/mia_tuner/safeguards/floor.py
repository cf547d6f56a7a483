"""The perfect defence's floor on a controlled-membership set: release the model before injection.

On a controlled set the membership signal is exactly what the injection put into the model,
and the model before injection is at hand. Releasing it hides every member for good: its
attacks' AUROC is the best any defence can reach on the same test texts, and its perplexity
and KL against the injected model are the price of undoing what the members did. No defender
can release it (it needs the model before training); `defend` reports it beside a defence
so that the defence's numbers come with their floor: the suite runner scores the attacks on the
released model as a column of the defence's cell (``suite.defence``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mia_tuner.safeguards.utility import Utility, measure_utility


@dataclass
class Floor:
    model: str  # the model before injection
    rows: list[dict]  # per attack: before = the injected model, after = the model before injection
    utility: Utility  # the injected model's perplexity and the released one's, KL between them

    def to_dict(self) -> dict:
        return {"model": self.model, "rows": self.rows, "utility": self.utility.to_dict()}


def floor_methods(methods: list, reference: str | None, released: str) -> list:
    """The attacks that mean something on the released model: not those that read a reference
    when the reference is the released model itself (a score of 0 for every text)."""
    if reference != released:
        return list(methods)
    return [m for m in methods if not m.needs_reference]


def released_utility(released, injected, *, questions=None, max_tokens: int = 256) -> Utility:
    """The price of releasing ``released`` (the model before injection) instead of ``injected``
    (LoadedModels): perplexity of each on general text, KL between them, greedy agreement."""
    return measure_utility(released.model, released.tokenizer, questions=questions, max_tokens=max_tokens,
                           original=injected.model)
