"""Member/non-member sets: loading, validation, hygiene, the shared evaluation split and
text corpora for controlled-membership sets."""

from mia_tuner.data.corpus import (
    clean_text,
    drop_near_duplicates,
    load_corpus,
    passages_from_texts,
    python_docs_corpus,
)
from mia_tuner.data.hygiene import deduplicate, format_hygiene, hygiene_report
from mia_tuner.data.loading import load_membership_set, resolve_config
from mia_tuner.data.split import EvaluationSplit, carve_validation, make_split
from mia_tuner.data.types import MEMBER, NON_MEMBER, MembershipSet, text_hash
from mia_tuner.data.validation import validate

__all__ = [
    "MEMBER",
    "NON_MEMBER",
    "EvaluationSplit",
    "MembershipSet",
    "carve_validation",
    "clean_text",
    "deduplicate",
    "drop_near_duplicates",
    "format_hygiene",
    "hygiene_report",
    "load_corpus",
    "load_membership_set",
    "make_split",
    "passages_from_texts",
    "python_docs_corpus",
    "resolve_config",
    "text_hash",
    "validate",
]
