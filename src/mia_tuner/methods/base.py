"""The method registry and the one place where the score orientation is enforced.

A method computes a *raw statistic* per text and declares which way it points
(``higher_is_member``). ``Method.score`` turns it into a *score*, which is always higher for a
more likely member. Nothing else in the package flips signs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from ..config import DEFAULT_SEED, MethodConfig
from ..errors import MethodError


# The models a method may read besides the target, by role (ScoringContext.stats).
REFERENCE = "reference"  # the reference model as given
ADAPTED_REFERENCE = "reference:adapted"  # ... fine-tuned on the training part's non-members
FINE_TUNED_TARGET = "target:fine-tuned"  # the target fine-tuned on them (FSD)


@dataclass
class ScoringContext:
    """What methods may draw on: the target model's statistics, a reference model's (and the
    other models of ``factories``, by role), the labelled training texts (for learned
    detectors) and the method settings."""

    target: object  # StatsProvider of the target model
    settings: MethodConfig = field(default_factory=MethodConfig)
    reference: object | None = None  # StatsProvider of the reference model, built lazily
    reference_factory: Callable[[], object] | None = None
    # StatsProviders of the other roles (ADAPTED_REFERENCE, FINE_TUNED_TARGET), built lazily
    factories: dict[str, Callable[[], object]] = field(default_factory=dict)
    providers: dict[str, object] = field(default_factory=dict)
    same_tokenizer: bool | None = None  # the reference's tokenizer is the target's (None: unknown)
    train_texts: tuple[str, ...] = ()
    train_labels: tuple[int, ...] = ()
    seed: int = DEFAULT_SEED
    # scores of another method on other texts (the training part, for `fused`), through the
    # score cache when the engine provides it: (method, texts) -> scores
    score_cached: Callable | None = None
    shared: dict = field(default_factory=dict)  # state methods share within a run (prefix caches)

    def scores_of(self, method: "Method", texts) -> np.ndarray:
        """``method``'s scores of ``texts``, from the score cache where there is one."""
        if self.score_cached is not None:
            return self.score_cached(method, list(texts))
        return method.score(list(texts), self)

    def reference_stats(self):
        if self.reference is None:
            if self.reference_factory is None:
                raise MethodError("the `ref` method needs a reference model: pass --reference MODEL")
            self.reference = self.reference_factory()
        return self.reference

    def stats(self, role: str):
        """The StatsProvider of the model in ``role`` (built on first use)."""
        if role == REFERENCE:
            return self.reference_stats()
        if role not in self.providers:
            if role not in self.factories:
                raise MethodError(f"no {role} model in this run (it is built from a reference or target "
                                  "model and the training part's non-members: --adapt-reference)")
            self.providers[role] = self.factories[role]()
        return self.providers[role]


class Method(ABC):
    """A detection method: texts in, one score per text out (higher = more likely member)."""

    name: ClassVar[str]
    higher_is_member: ClassVar[bool]
    uses_model: ClassVar[bool] = True
    # capabilities, read by the engine and by `fused` (never a check of the name)
    needs_reference: ClassVar[bool] = False  # left out of `all` when no reference model is given
    needs_topk: ClassVar[bool] = False  # reads the target's top-k next-token candidates
    uses_labels: ClassVar[bool] = False  # learns from the labelled training part
    fusable: ClassVar[bool] = False  # a score-based statistic that `fused` combines
    reads_scores: ClassVar[bool] = False  # combines other methods' scores (scored after them)
    needs_same_tokenizer: ClassVar[bool] = False  # compares target and reference token by token
    reads_reference_tokens: ClassVar[bool] = False  # needs the reference's token statistics, if any
    adaptable: ClassVar[bool] = False  # reads a reference that --adapt-reference can adapt
    sweeps_k: ClassVar[bool] = False  # a lowest-k statistic: --k-sweep and `fused` add rows for more k
    reads_prefix: ClassVar[bool] = False  # conditions on training texts (the ReCaLL shots)
    fine_tuned_role: ClassVar[str | None] = None  # the role of a model fine-tuned on non-members it reads
    version: ClassVar[int] = 1  # bumped when a method's scores change for the same settings

    def __init__(self, settings: MethodConfig):
        self.settings = settings

    @property
    def label(self) -> str:
        """The name shown in tables (differs from ``name`` for e.g. a k sweep)."""
        return self.name

    def cache_settings(self, ctx: ScoringContext) -> dict:
        """Everything besides the model and the text that changes this method's score."""
        return {}

    @abstractmethod
    def raw_statistic(self, texts: list[str], ctx: ScoringContext) -> np.ndarray:
        """The method's statistic, oriented as ``higher_is_member`` says."""

    def score(self, texts: list[str], ctx: ScoringContext) -> np.ndarray:
        """Scores oriented so that higher means more likely member (the one place)."""
        raw = np.asarray(self.raw_statistic(list(texts), ctx), dtype=np.float64)
        if raw.shape != (len(texts),):
            raise MethodError(f"{self.label}: expected {len(texts)} scores, got shape {raw.shape}")
        if not np.all(np.isfinite(raw)):
            raise MethodError(f"{self.label}: {int((~np.isfinite(raw)).sum())} non-finite scores")
        return raw if self.higher_is_member else -raw


class ReferenceMethod(Method):
    """A method that reads a reference model: the one given, or (``adapted``) that reference
    fine-tuned on the training part's non-members (label ``<name>:adapted``)."""

    needs_reference = True
    adaptable = True

    def __init__(self, settings: MethodConfig, adapted: bool = False):
        super().__init__(settings)
        self.adapted = adapted

    @property
    def uses_labels(self) -> bool:  # the adapted reference learnt from labelled non-members
        return self.adapted

    @property
    def reference_role(self) -> str:
        return ADAPTED_REFERENCE if self.adapted else REFERENCE

    @property
    def fine_tuned_role(self) -> str | None:
        return ADAPTED_REFERENCE if self.adapted else None

    @property
    def label(self) -> str:
        return f"{self.name}:adapted" if self.adapted else self.name

    def reference(self, ctx: ScoringContext):
        """The StatsProvider of the reference this method reads."""
        return ctx.stats(self.reference_role)

    def reference_settings(self, ctx: ScoringContext) -> dict:
        """The reference's part of the cache settings (its weights identify it, adapted or not)."""
        reference = self.reference(ctx)
        return {"reference": reference.loaded.fingerprint, "reference_max_tokens": reference.max_tokens}


# What a user must have for a method, as the demo's table groups its rows.
GROUPS = ("no reference, no labels", "labelled texts", "a reference", "a reference and labelled texts",
          "no model (the blind baseline)")


def method_group(method: Method) -> str:
    """The group of GROUPS a method's row belongs to (from its capabilities, not its name)."""
    if not method.uses_model:
        return GROUPS[4]
    return GROUPS[(1 if method.uses_labels else 0) + (2 if method.needs_reference else 0)]


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    if cls.name in METHODS:
        raise MethodError(f"method {cls.name!r} registered twice")
    if not isinstance(getattr(cls, "higher_is_member", None), bool):
        raise MethodError(f"method {cls.name!r} must declare higher_is_member")
    METHODS[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return list(METHODS)


def build_methods(names: list[str], settings: MethodConfig) -> list[Method]:
    """Instantiate methods by name (``all`` = every registered one); adds the k sweep."""
    wanted = available_methods() if "all" in names else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in METHODS]
    if unknown:
        raise MethodError(f"unknown method(s) {unknown}; available: {', '.join(METHODS)}")
    methods = [METHODS[n](settings) for n in wanted]
    for name in wanted:
        if METHODS[name].sweeps_k:
            methods += [METHODS[name](settings, k=k) for k in settings.k_sweep if k != settings.k]
    if settings.adapt_reference:  # each reference score again, on the adapted reference
        methods += [METHODS[n](settings, adapted=True) for n in wanted if METHODS[n].adaptable]
    return methods
