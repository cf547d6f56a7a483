"""Detection methods, registered by name. Importing this package registers the built-ins."""

from . import blind, likelihood_ratio, neighbor, reference_free  # noqa: F401  (registration)
from .base import METHODS, Method, ScoringContext, available_methods, build_methods, register
from .token_stats import StatsProvider, TokenStats

__all__ = ["METHODS", "Method", "ScoringContext", "StatsProvider", "TokenStats",
           "available_methods", "build_methods", "register"]
