"""Detection methods, registered by name. Importing this package registers the built-ins."""

# Registration order is the order of `--methods all` and of the tables.
from . import reference_free, likelihood_ratio, reference_tokens, neighbor, recall, fsd, blind, fused  # noqa: F401,I001
from .base import METHODS, Method, ScoringContext, available_methods, build_methods, register
from .token_stats import StatsProvider, TokenStats

__all__ = ["METHODS", "Method", "ScoringContext", "StatsProvider", "TokenStats",
           "available_methods", "build_methods", "register"]
