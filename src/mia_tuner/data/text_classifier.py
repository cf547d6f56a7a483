"""The model-free text classifier behind the blind baseline and the shift measures: it reads
the text alone (never the model), so its AUROC is what a set gives away by its wording."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from ..errors import MethodError


def blind_classifier(seed: int = 0):
    """TF-IDF of words and word pairs + L2 logistic regression."""
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=10.0, max_iter=2000, random_state=seed),
    )


def fit_blind(texts, labels, seed: int = 0):
    labels = np.asarray(labels)
    if len(set(labels.tolist())) < 2:
        raise MethodError("the blind baseline needs labelled training texts of both classes")
    return blind_classifier(seed).fit(list(texts), labels)
