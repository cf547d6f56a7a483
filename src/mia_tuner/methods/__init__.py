"""Detection methods, registered by name: every module of this package is imported here, so
a new method is one new file that defines a ``Method`` subclass under ``@register``.

The built-in modules come first, in the order of `--methods all` and of the tables; any other
module of the package follows, by name.
"""

import importlib
import pkgutil

from .base import METHODS, Method, ScoringContext, available_methods, build_methods, register
from .token_stats import StatsProvider, TokenStats

BUILT_IN = ("reference_free", "likelihood_ratio", "reference_tokens", "neighbor", "recall", "fsd", "blind",
            "fused")
_SUPPORT = ("base", "token_stats")  # the registry and the shared statistics: no methods of their own


def _method_modules() -> list[str]:
    others = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in (*BUILT_IN, *_SUPPORT))
    return [*BUILT_IN, *others]


for _module in _method_modules():
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["METHODS", "Method", "ScoringContext", "StatsProvider", "TokenStats",
           "available_methods", "build_methods", "register"]
