"""`fused`: what the labels are worth without touching the model's weights.

A logistic regression on the standardised scores of every score-based method (Min-K% and
Min-K%++ at several k, ReCaLL and Con-ReCall included), trained on the same labelled training
texts a learned detector gets (less the ReCaLL prefix's shots, whose scores would be
leaked), its regularisation chosen by cross-validated AUROC on them. `fused` leaves Ref out
(reference-free, comparable with reference-free detectors); `fused+ref` adds it.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import MethodError
from .base import METHODS, Method, ScoringContext, register
from .recall import prefix_shots
from .reference_tokens import ErrorShare

CV_FOLDS = 5
REGULARISATION_GRID = np.logspace(-3, 3, 13)


@register
class Fused(Method):
    """P(member) of a logistic regression over the score-based methods' scores."""

    name = "fused"
    higher_is_member = True
    uses_labels = True
    reads_scores = True
    with_reference = False

    def __init__(self, settings):
        super().__init__(settings)
        self._base = self._build_base_methods()  # once: read for every batch

    @property
    def needs_topk(self) -> bool:  # when it reads `neighbor`
        return any(m.needs_topk for m in self._base)

    def base_methods(self, ctx: ScoringContext | None = None) -> list[Method]:
        """The features; those that compare tokens with the reference only where its tokenizer
        is the target's."""
        if ctx is not None and ctx.same_tokenizer is False:
            return [m for m in self._base if not m.needs_same_tokenizer]
        return self._base

    def _build_base_methods(self) -> list[Method]:
        chosen = set(self.settings.fused_features)
        unknown = chosen - {name for name, cls in METHODS.items() if cls.fusable}
        if unknown:
            raise MethodError(f"fused_features names {', '.join(sorted(unknown))}, which `fused` cannot "
                              f"read; choose among {', '.join(n for n, c in METHODS.items() if c.fusable)}")
        methods = []
        for cls in METHODS.values():
            if not cls.fusable or (cls.needs_reference and not self.with_reference):
                continue
            if chosen and cls.name not in chosen and not cls.needs_reference:
                continue
            if cls.sweeps_k:
                methods += [cls(self.settings, k=k) for k in self.settings.fused_k]
            else:
                methods.append(cls(self.settings))
        if self.with_reference:  # with the token-level reference scores: how often the target errs
            methods.append(ErrorShare(self.settings))
        return methods

    def training_texts(self, ctx: ScoringContext) -> tuple[list[str], np.ndarray]:
        """The training part, less the prefix shots when a labelled-prefix attack is a feature."""
        reads_prefix = any(m.reads_prefix for m in self.base_methods(ctx))
        shots = {t for group in prefix_shots(ctx).values() for t in group} if reads_prefix else set()
        kept = [(t, y) for t, y in zip(ctx.train_texts, ctx.train_labels) if t not in shots]
        labels = np.array([y for _, y in kept])
        if min((labels == 1).sum(), (labels == 0).sum()) < 2:
            raise MethodError(f"`{self.name}` needs at least 2 training texts per class besides "
                              "the ReCaLL shots")
        return [t for t, _ in kept], labels

    def cache_settings(self, ctx: ScoringContext) -> dict:
        texts, labels = self.training_texts(ctx)
        payload = json.dumps([texts, labels.tolist(),
                              [(m.label, m.cache_settings(ctx)) for m in self.base_methods(ctx)]],
                             sort_keys=True, default=str)
        return {"fit": hashlib.sha256(payload.encode()).hexdigest()[:16], "seed": ctx.seed,
                "classifier": f"standardised logreg, C by {CV_FOLDS}-fold CV AUROC"}

    def features(self, texts: list[str], ctx: ScoringContext) -> np.ndarray:
        return np.column_stack([ctx.scores_of(m, texts) for m in self.base_methods(ctx)])

    def classifier(self, ctx: ScoringContext):
        key = (self.name, json.dumps(self.cache_settings(ctx), sort_keys=True))
        if key not in ctx.shared:  # fitted once a run, then used batch by batch
            texts, labels = self.training_texts(ctx)
            folds = min(CV_FOLDS, int((labels == 1).sum()), int((labels == 0).sum()))
            model = make_pipeline(StandardScaler(), LogisticRegressionCV(
                Cs=REGULARISATION_GRID, cv=folds, scoring="roc_auc", max_iter=5000))
            features = self.features(texts, ctx)
            with warnings.catch_warnings():  # scikit-learn's notices of future defaults
                warnings.simplefilter("ignore", FutureWarning)
                ctx.shared[key] = model.fit(features, labels)
        return ctx.shared[key]

    def raw_statistic(self, texts, ctx):
        model = self.classifier(ctx)
        member_column = list(model.classes_).index(1)
        return model.predict_proba(self.features(list(texts), ctx))[:, member_column]


@register
class FusedRef(Fused):
    """`fused` with the reference scores as more features (needs a reference model): Ref and,
    with a reference of the target's tokenizer, EZ, Ref-Min-K%, Ref-Min-K%++ and the share of
    tokens the target gets wrong."""

    name = "fused+ref"
    needs_reference = True
    with_reference = True
    reads_reference_tokens = True
    version = 2  # 2: the token-level reference features
