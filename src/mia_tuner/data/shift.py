"""How much of a membership set a model-free classifier solves, and two ways to de-bias it.

WikiMIA-style sets take members and non-members from different years, so dates and topics give
the label away without any model. Here:

* ``mask_dates``: years, dates with a month name (with or without the year), year ranges and
  ordinal numbers (which tie a recurring event to its year: "the 48th edition") become
  placeholders — in both classes;
* ``event_key`` / ``pair_by_event``: keep only recurring events seen in both a member and a
  non-member year (the same name once its dates are masked), one member per non-member, so
  topics match across classes;
* ``year_scores`` / ``blind_cv_auroc`` / ``shift_report``: the year-only heuristic's AUROC and
  the cross-validated blind baseline's AUROC — near 0.5 for a set without shift.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from ..errors import DataError
from .types import MEMBER, NON_MEMBER, MembershipSet

YEAR_TOKEN, DATE_TOKEN, ORDINAL_TOKEN = "[YEAR]", "[DATE]", "[ORD]"
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December"
           "|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
_YEAR = r"(?:1[5-9]\d\d|20\d\d)"
_TENS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
_UNITS_ORD = "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth"
# single-word ordinals from "fourth" on ("the eighteenth conference"); first-third are too common
_WORD_ORD = ("fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth"
             "|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|thirtieth|fortieth"
             "|fiftieth|sixtieth|seventieth|eightieth|ninetieth|hundredth")
_PATTERNS = [
    # "5 March 2024", "March 5, 2024", "March 2024", "Mar. 2016"
    (re.compile(rf"\b(?:\d{{1,2}}\s+)?(?:{_MONTHS})\.?(?:\s+\d{{1,2}}(?:st|nd|rd|th)?,?)?\s+{_YEAR}\b"),
     DATE_TOKEN),
    # "March 11", "11 March" (a day and month without the year still dates the text)
    (re.compile(rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_MONTHS})|(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?)\b"),
     DATE_TOKEN),
    # "2015–16", "2015-2016", "2015/16" (season and edition ranges)
    (re.compile(rf"\b{_YEAR}\s*[–—/-]\s*(?:{_YEAR}|\d\d)\b"), YEAR_TOKEN),
    # "2024", "2020s"
    (re.compile(rf"\b{_YEAR}s?\b"), YEAR_TOKEN),
    # "48th", "21st", "twenty-first" (event numbers count the years)
    (re.compile(r"\b\d+(?:st|nd|rd|th)\b", re.IGNORECASE), ORDINAL_TOKEN),
    (re.compile(rf"\b(?:{_TENS})[- ](?:{_UNITS_ORD})\b", re.IGNORECASE), ORDINAL_TOKEN),
    (re.compile(rf"\b(?:{_WORD_ORD})\b", re.IGNORECASE), ORDINAL_TOKEN),
]
_YEAR_IN_TEXT = re.compile(rf"\b({_YEAR})s?\b")
# the subject of a lead sentence ends at its first verb, comma or parenthesis
_SUBJECT_END = re.compile(r"\s(?:was|were|is|are|will be|took place|has been|had been)\s|[,(;:]")
_KEY_STOPWORDS = {"the", "a", "an", YEAR_TOKEN.lower(), DATE_TOKEN.lower(), ORDINAL_TOKEN.lower()}


def mask_dates(text: str) -> str:
    """``text`` with dates, years, year ranges and ordinals replaced by placeholders."""
    for pattern, token in _PATTERNS:
        text = pattern.sub(token, text)
    return text


def mask_set(data: MembershipSet) -> MembershipSet:
    """Every text of ``data`` masked (both classes alike)."""
    return MembershipSet(texts=[mask_dates(t) for t in data.texts], labels=data.labels,
                         name=f"{data.name}+mask-dates", info={**data.info, "mask_dates": True})


def event_key(text: str, max_words: int = 12) -> str | None:
    """The event a lead section is about: its subject (before the first verb), dates masked,
    lower-cased, without articles and placeholders; None when fewer than 2 words remain.

    "The 2016 Boston Marathon was the 120th ..." and "The 2024 Boston Marathon was ..." both
    give "boston marathon".
    """
    masked = mask_dates(text)
    subject = _SUBJECT_END.split(" " + masked, maxsplit=1)[0]
    words = [w for w in re.findall(r"[\w\[\]'’-]+", subject.lower()) if w not in _KEY_STOPWORDS]
    words = words[:max_words]
    return " ".join(words) if len(words) >= 2 else None


def pair_by_event(data: MembershipSet, seed: int = 0, keys: list[str | None] | None = None) -> MembershipSet:
    """Only texts of events present in both classes, as many members as non-members per event.

    ``keys`` (one per text) default to ``event_key`` of each text; the builder passes the
    article titles instead. Within an event the kept texts are drawn with ``seed``.
    """
    keys = keys if keys is not None else [event_key(t) for t in data.texts]
    if len(keys) != len(data):
        raise DataError(f"{len(keys)} event keys for {len(data)} texts")
    by_event: dict[str, dict[int, list[int]]] = defaultdict(lambda: {MEMBER: [], NON_MEMBER: []})
    for i, (key, label) in enumerate(zip(keys, data.labels)):
        if key:
            by_event[key][label].append(i)
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    for key in sorted(by_event):
        members, nonmembers = by_event[key][MEMBER], by_event[key][NON_MEMBER]
        n = min(len(members), len(nonmembers))
        if n:
            kept += sorted(rng.permutation(members)[:n].tolist() + rng.permutation(nonmembers)[:n].tolist())
    kept.sort()
    n_events = sum(1 for v in by_event.values() if v[MEMBER] and v[NON_MEMBER])
    return MembershipSet(texts=[data.texts[i] for i in kept], labels=[data.labels[i] for i in kept],
                         name=f"{data.name}+paired",
                         info={**data.info, "paired": True, "paired_events": n_events})


def debias(data: MembershipSet, mask: bool = True, paired: bool = True, seed: int = 0) -> MembershipSet:
    """Pairing (on the original texts' event keys) then masking, as asked. Texts that masking
    makes identical are deduplicated again (one copy kept within a class; a text now in both
    classes is dropped from both, as no detector could tell them apart)."""
    from .hygiene import deduplicate

    out = pair_by_event(data, seed) if paired else data
    return deduplicate(mask_set(out))[0] if mask else out


def latest_year(text: str) -> int | None:
    """The latest year a text mentions (None when it mentions none)."""
    years = [int(y) for y in _YEAR_IN_TEXT.findall(text)]
    return max(years) if years else None


def year_scores(texts) -> np.ndarray:
    """The year-only heuristic, higher = more likely member: minus the latest year mentioned.

    Texts without a year get the median of the others' scores (no information either way),
    or 0 when no text has a year — every text is then tied and the AUROC is 0.5.
    """
    years = [latest_year(t) for t in texts]
    known = [-y for y in years if y is not None]
    neutral = float(np.median(known)) if known else 0.0
    return np.array([neutral if y is None else -float(y) for y in years])


def event_groups(texts) -> list[str]:
    """One group per event (``event_key``); a text without a key is its own group."""
    return [event_key(t) or f"#row{i}" for i, t in enumerate(texts)]


def blind_cv_scores(data: MembershipSet, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold P(member) of the blind baseline, stratified ``folds``-fold cross-validation
    with every event's texts in one fold (else a paired set's twins, one per class, would teach
    the classifier the opposite label for the same topic and push it below chance)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from .text_classifier import fit_blind

    labels = np.array(data.labels)
    smallest = min(int((labels == MEMBER).sum()), int((labels == NON_MEMBER).sum()))
    if smallest < 2:
        raise DataError(f"cross-validation needs at least 2 texts of each class, got {smallest}")
    folds = min(folds, smallest)
    texts = np.array(data.texts, dtype=object)
    scores = np.empty(len(data))
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(texts, labels, event_groups(data.texts)):
        classifier = fit_blind(texts[train].tolist(), labels[train], seed)
        column = list(classifier.classes_).index(MEMBER)
        scores[test] = classifier.predict_proba(texts[test].tolist())[:, column]
    return scores


def shift_report(data: MembershipSet, folds: int = 5, seed: int = 0) -> dict:
    """Blind (cross-validated) and year-heuristic AUROC of a set, with the share of texts of
    each class that mention a year."""
    from ..metrics import compute_metrics

    labels = np.array(data.labels)
    has_year = np.array([latest_year(t) is not None for t in data.texts])
    return {
        "n_member": int((labels == MEMBER).sum()), "n_nonmember": int((labels == NON_MEMBER).sum()),
        "blind_auroc": compute_metrics(labels, blind_cv_scores(data, folds, seed), n_bootstrap=0).auroc,
        "blind_folds": min(folds, int(min((labels == MEMBER).sum(), (labels == NON_MEMBER).sum()))),
        "year_auroc": compute_metrics(labels, year_scores(data.texts), n_bootstrap=0).auroc,
        "member_with_year": float(has_year[labels == MEMBER].mean()),
        "nonmember_with_year": float(has_year[labels == NON_MEMBER].mean()),
    }


def format_shift(report: dict) -> str:
    return (f"Shift: blind baseline AUROC {report['blind_auroc']:.3f} "
            f"({report['blind_folds']}-fold cross-validated), year heuristic AUROC "
            f"{report['year_auroc']:.3f}; texts mentioning a year: members "
            f"{report['member_with_year']:.0%}, non-members {report['nonmember_with_year']:.0%}. "
            "0.5 = no shift a model-free classifier can find.")
