"""The blind (model-free) baseline: a bag-of-words classifier on the text alone.

It is trained on the labelled training part of the split and scores the test part. Its AUROC
says how much of a benchmark can be solved without the model at all (on WikiMIA-style sets,
dates give the label away).
"""

from __future__ import annotations

import hashlib
import json

from ..data.text_classifier import fit_blind
from .base import Method, ScoringContext, register



@register
class Blind(Method):
    """P(member | text) from a classifier that never sees the model."""

    name = "blind"
    higher_is_member = True
    uses_model = False
    uses_labels = True

    def cache_settings(self, ctx: ScoringContext) -> dict:
        payload = json.dumps([list(ctx.train_texts), list(ctx.train_labels)], ensure_ascii=False)
        return {"train": hashlib.sha256(payload.encode()).hexdigest()[:16], "seed": ctx.seed,
                "classifier": "tfidf-1-2gram+logreg-C10"}

    def raw_statistic(self, texts, ctx):
        key = self.cache_settings(ctx)["train"], ctx.seed
        if getattr(self, "_fitted", (None, None))[0] != key:  # fit once, score batch by batch
            self._fitted = key, fit_blind(ctx.train_texts, ctx.train_labels, ctx.seed)
        classifier = self._fitted[1]
        member_column = list(classifier.classes_).index(1)
        return classifier.predict_proba(list(texts))[:, member_column]
