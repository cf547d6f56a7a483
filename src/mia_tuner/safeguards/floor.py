"""The perfect defence's floor on a controlled-membership set: release the model before injection.

On a controlled set the membership signal is exactly what the injection put into the model,
and the model before injection is at hand. Releasing it hides every member for good: its
attacks' AUROC is the best any defence can reach on the same test texts, and its perplexity
and KL against the injected model are the price of undoing what the members did. No defender
can release it (it needs the model before training); `defend` reports it beside a defence
so that the defence's numbers come with their floor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mia_tuner.config import ModelConfig, RunConfig
from mia_tuner.data.split import EvaluationSplit
from mia_tuner.safeguards.report import metric_row
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


def perfect_defence_floor(run_config: RunConfig, injected, before_injection: ModelConfig, split: EvaluationSplit,
                          before: dict, methods: list, *, shard=None, questions=None,
                          max_tokens: int = 256) -> Floor:
    """The floor of ``methods`` on ``split``'s test texts: ``before`` holds their scores on the
    ``injected`` model (a LoadedModel), the same attacks run on ``before_injection``."""
    from mia_tuner.models import load_model
    from mia_tuner.run import score_split

    released = load_model(before_injection, cache_dir=run_config.cache_dir)
    methods = floor_methods(methods, run_config.methods.reference, before_injection.name)
    after, _, _ = score_split(replace(run_config, model=before_injection), released, split, methods, shard)
    labels = np.array(split.test.labels)
    rows = [metric_row(m.label, labels, before[m.label], after[m.label], False) for m in methods]
    utility = measure_utility(released.model, released.tokenizer, questions=questions, max_tokens=max_tokens,
                              original=injected.model)
    return Floor(model=before_injection.name, rows=rows, utility=utility)
