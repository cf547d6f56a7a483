"""Passing a key/value cache to a transformers model across versions: the argument and the
output field were renamed from ``past_key_values`` to ``cache`` (transformers 5)."""

from __future__ import annotations

import inspect
from functools import lru_cache


@lru_cache(maxsize=None)
def _argument(forward_class) -> str:
    parameters = inspect.signature(forward_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def with_cache(model, cache) -> dict:
    """The keyword argument that hands ``cache`` to ``model``'s forward."""
    return {_argument(type(model)): cache}


def returned_cache(output):
    """The cache a forward with ``use_cache=True`` returned."""
    return output["cache"] if "cache" in output else output["past_key_values"]
