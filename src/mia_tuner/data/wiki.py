"""Build a WikiMIA-24-style set for any training cutoff: members from event articles of some
months, non-members from months after the cutoff.

Recipe (the paper's): the articles of the Wikipedia categories "<Month Year> events by country"
and their sub-categories (to ``depth``), the lead section of each, cut into length buckets by
word count and truncated to the bucket, exact duplicates removed, texts shorter than the
smallest bucket dropped, the classes balanced per length with the seed. Optional de-biasing:
``mask_dates`` and ``paired`` (see ``data.shift``; pairs use the article titles).

Pages come from a ``PageSource``: ``OfflinePages`` (a JSONL file of title / categories / lead,
category pages included as rows whose title starts with "Category:") or ``OnlinePages`` (the
``wikipedia-api`` client, rate-limited, retrying, resumable from a local cache of fetched pages).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import DEFAULT_SEED
from ..errors import DataError
from .hygiene import deduplicate
from .loading import read_text_file
from .shift import event_key, mask_dates, pair_by_event
from .types import MEMBER, NON_MEMBER, MembershipSet

log = logging.getLogger(__name__)
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
CATEGORY = "Category:"
_RANGE = re.compile(r"^(\d{4})-(\d{2}):(\d{4})-(\d{2})$")


@dataclass
class WikiBuildConfig:
    """What ``build_wiki`` builds (recorded in the card)."""

    members: str = "2015-01:2016-12"  # YYYY-MM:YYYY-MM, inclusive
    non_members: str = "2024-03:2024-12"
    depth: int = 1  # sub-category levels below each month's category
    lengths: tuple[int, ...] = (32, 64, 128, 256)
    nested: bool = False  # WikiMIA style: a long text also feeds every shorter bucket
    mask_dates: bool = False
    paired: bool = False
    seed: int = DEFAULT_SEED
    category_format: str = "{month} {year} events by country"

    def __post_init__(self) -> None:
        self.lengths = tuple(sorted(int(n) for n in self.lengths))
        if not self.lengths or self.lengths[0] < 1:
            raise DataError(f"lengths must be positive word counts, got {self.lengths}")
        if self.depth < 0:
            raise DataError(f"depth must be >= 0, got {self.depth}")
        month_range(self.members), month_range(self.non_members)


def month_range(spec: str) -> list[tuple[int, int]]:
    """(year, month) pairs of ``YYYY-MM:YYYY-MM`` (inclusive); DataError when malformed."""
    match = _RANGE.match(spec.strip())
    if not match:
        raise DataError(f"a month range looks like 2015-01:2016-12, got {spec!r}")
    y0, m0, y1, m1 = map(int, match.groups())
    if not (1 <= m0 <= 12 and 1 <= m1 <= 12) or (y0, m0) > (y1, m1):
        raise DataError(f"month range {spec!r} is empty or has a month outside 01-12")
    months, (y, m) = [], (y0, m0)
    while (y, m) <= (y1, m1):
        months.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


def month_category(year: int, month: int, fmt: str) -> str:
    return CATEGORY + fmt.format(month=MONTHS[month - 1], year=year)


class PageSource(Protocol):
    def category_members(self, category: str) -> tuple[list[str], list[str]]:
        """(article titles, sub-category titles) directly in ``category``."""

    def lead(self, title: str) -> str | None:
        """The article's lead section (None when the page does not exist)."""


class OfflinePages:
    """Pages from a JSONL file: one object per page with ``title``, ``categories`` (titles,
    with or without the "Category:" prefix) and ``lead``; category pages are rows whose title
    starts with "Category:" (their ``categories`` are their parents)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"pages file not found: {self.path}")
        self._children: dict[str, list[str]] = defaultdict(list)
        self._leads: dict[str, str] = {}
        for number, line in enumerate(read_text_file(self.path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                title, parents = str(row["title"]), list(row.get("categories") or [])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise DataError(f"{self.path}:{number}: not a page object with a title ({error})") from error
            if not title.startswith(CATEGORY):
                self._leads[title] = str(row.get("lead") or "")
            for parent in parents:
                parent = parent if parent.startswith(CATEGORY) else CATEGORY + parent
                self._children[parent].append(title)

    def category_members(self, category: str) -> tuple[list[str], list[str]]:
        children = self._children.get(category, [])
        return ([t for t in children if not t.startswith(CATEGORY)],
                [t for t in children if t.startswith(CATEGORY)])

    def lead(self, title: str) -> str | None:
        return self._leads.get(title)


# the client's settings a user may change (the `data build-wiki` options read these defaults)
ONLINE_DEFAULTS = {"user_agent": "", "language": "en", "min_interval": 0.5}


class OnlinePages:
    """Pages from the live Wikipedia API through the ``wikipedia-api`` client.

    Requests are spaced by ``min_interval`` seconds; transient failures are retried by the
    client (``max_retries``, exponential back-off, Retry-After on 429) and then by us up to
    ``attempts`` times. Every answer is appended to ``cache_dir`` (categories.jsonl,
    pages.jsonl) and read back on the next run, so an interrupted build resumes where it stopped.
    ``client`` replaces the real one (tests pass an object with the same ``page(title)`` API).
    """

    CATEGORY_NAMESPACE = 14

    def __init__(self, cache_dir: str | Path, user_agent: str = ONLINE_DEFAULTS["user_agent"],
                 language: str = ONLINE_DEFAULTS["language"], min_interval: float = ONLINE_DEFAULTS["min_interval"],
                 attempts: int = 3, client=None):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.min_interval, self.attempts = min_interval, attempts
        self.client = client or self._make_client(user_agent, language)
        self._last = 0.0
        self._categories = self._read_cache("categories.jsonl", "category")
        self._pages = self._read_cache("pages.jsonl", "title")

    @staticmethod
    def _make_client(user_agent: str, language: str):
        try:
            import wikipediaapi
        except ImportError as error:
            raise DataError("the online builder needs the wikipedia-api client: "
                            "pip install 'mia-tuner[wiki]' (or give --pages FILE to build offline)") from error
        if len(user_agent) < 5:
            raise DataError("Wikipedia asks every client for a user agent with a contact, e.g. "
                            "--user-agent 'my-audit/1.0 (me@example.org)'")
        return wikipediaapi.Wikipedia(user_agent=user_agent, language=language)

    def _read_cache(self, name: str, key: str) -> dict[str, dict]:
        path = self.cache_dir / name
        if not path.is_file():
            return {}
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {row[key]: row for row in rows}

    def _remember(self, name: str, row: dict) -> None:
        with (self.cache_dir / name).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    def _fetch(self, what):
        """``what()`` after the rate-limit wait, retried on errors with growing pauses."""
        for attempt in range(1, self.attempts + 1):
            wait = self.min_interval - (time.monotonic() - self._last)
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()
            try:
                return what()
            except Exception as error:  # noqa: BLE001 - network errors of any kind are retried
                if attempt == self.attempts:
                    raise DataError(f"Wikipedia request failed {attempt} times: {error}") from error
                log.warning("Wikipedia request failed (%s); retrying", error)
                time.sleep(self.min_interval * 2 ** attempt)

    def category_members(self, category: str) -> tuple[list[str], list[str]]:
        if category not in self._categories:
            members = self._fetch(lambda: self.client.page(category).categorymembers)
            pages = [p.title for p in members.values() if p.ns != self.CATEGORY_NAMESPACE]
            subcategories = [p.title for p in members.values() if p.ns == self.CATEGORY_NAMESPACE]
            row = {"category": category, "pages": pages, "subcategories": subcategories}
            self._categories[category] = row
            self._remember("categories.jsonl", row)
        row = self._categories[category]
        return list(row["pages"]), list(row["subcategories"])

    def lead(self, title: str) -> str | None:
        if title not in self._pages:
            def get():
                page = self.client.page(title)
                return page.summary if page.exists() else None
            row = {"title": title, "lead": self._fetch(get)}
            self._pages[title] = row
            self._remember("pages.jsonl", row)
        return self._pages[title]["lead"]


def articles_of_month(source: PageSource, category: str, depth: int) -> set[str]:
    """Article titles in ``category`` and its sub-categories down to ``depth`` levels."""
    titles, seen, frontier = set(), {category}, [category]
    for level in range(depth + 1):
        next_frontier = []
        for current in frontier:
            pages, subcategories = source.category_members(current)
            titles.update(pages)
            if level < depth:
                fresh = [c for c in subcategories if c not in seen]
                seen.update(fresh)
                next_frontier += fresh
        frontier = next_frontier
    return titles


def collect_titles(source: PageSource, config: WikiBuildConfig) -> tuple[dict[str, int], int]:
    """{title: label} of every article of the two ranges; titles in both ranges are dropped
    (returned count)."""
    found: dict[int, set[str]] = {}
    for label, spec in ((MEMBER, config.members), (NON_MEMBER, config.non_members)):
        found[label] = set()
        for year, month in month_range(spec):
            found[label] |= articles_of_month(source, month_category(year, month, config.category_format),
                                              config.depth)
    both = found[MEMBER] & found[NON_MEMBER]
    titles = {t: MEMBER for t in found[MEMBER] - both}
    titles.update({t: NON_MEMBER for t in found[NON_MEMBER] - both})
    return dict(sorted(titles.items())), len(both)


def buckets(text: str, lengths: tuple[int, ...], nested: bool) -> list[tuple[int, str]]:
    """(length, text truncated to it) for the largest bucket the text fills (every bucket it
    fills when ``nested``); empty when shorter than the smallest bucket."""
    words = text.split()
    fitting = [n for n in lengths if len(words) >= n]
    chosen = fitting if nested else fitting[-1:]
    return [(n, " ".join(words[:n])) for n in chosen]


@dataclass
class LengthRows:
    """One length bucket's texts, labels and the titles they come from."""

    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)


def _balance(data: MembershipSet, seed: int) -> MembershipSet:
    """Both classes cut to the smaller one's size by a seeded random draw (row order kept)."""
    rng = np.random.default_rng(seed)
    by_class = {c: [i for i, y in enumerate(data.labels) if y == c] for c in (MEMBER, NON_MEMBER)}
    n = min(len(v) for v in by_class.values())
    return data.subset(sorted(i for v in by_class.values() for i in rng.permutation(v)[:n].tolist()))


def _finish_length(rows: LengthRows, config: WikiBuildConfig) -> tuple[LengthRows, dict]:
    """Dedupe (``hygiene.deduplicate``: a text found in both classes leaves both), pair (on
    titles), balance one length; with its counts."""
    title_of: dict[str, str] = {}
    for text, title in zip(rows.texts, rows.titles):
        title_of.setdefault(text, title)
    data, removed = deduplicate(MembershipSet(texts=rows.texts, labels=rows.labels))
    counts = {"duplicates_removed": removed["duplicate_rows"] + removed["conflicting_rows"]}
    if config.paired:
        data = pair_by_event(data, config.seed, keys=[event_key(title_of[t]) for t in data.texts])
        counts["paired_events"] = data.info["paired_events"]
    data = _balance(data, config.seed)
    counts.update(member=data.n_member, nonmember=data.n_nonmember)
    return LengthRows(list(data.texts), list(data.labels), [title_of[t] for t in data.texts]), counts


def split_name(length: int) -> str:
    return f"WikiMIA_length{length}"


def build_wiki(source: PageSource, config: WikiBuildConfig, out: str | Path) -> dict:
    """Build the set into ``out`` (a datasets folder, ``jsonl/<length>.jsonl``, ``card.json``);
    returns the card."""
    import datasets

    titles, in_both = collect_titles(source, config)
    per_length = {n: LengthRows() for n in config.lengths}
    missing = too_short = 0
    for title, label in titles.items():
        lead = source.lead(title)
        if not lead:
            missing += 1
            continue
        if config.mask_dates:  # before cutting, so a masked text still has its bucket's length
            lead = mask_dates(lead)
        pieces = buckets(" ".join(lead.split()), config.lengths, config.nested)
        too_short += not pieces
        for n, text in pieces:
            rows = per_length[n]
            rows.texts.append(text), rows.labels.append(label), rows.titles.append(title)
    out = Path(out)
    (out / "jsonl").mkdir(parents=True, exist_ok=True)
    splits, counts = {}, {}
    for n, rows in per_length.items():
        rows, counts[str(n)] = _finish_length(rows, config)
        with (out / "jsonl" / f"{n}.jsonl").open("w", encoding="utf-8") as handle:
            for text, label, title in zip(rows.texts, rows.labels, rows.titles):
                handle.write(json.dumps({"input": text, "label": label, "title": title}, ensure_ascii=False) + "\n")
        if rows.texts:
            splits[split_name(n)] = datasets.Dataset.from_dict(
                {"input": rows.texts, "label": rows.labels, "title": rows.titles})
    if not splits:
        raise DataError(f"no article of {config.members} / {config.non_members} gave a text of "
                        f"at least {config.lengths[0]} words in both classes; nothing to save")
    datasets.DatasetDict(splits).save_to_disk(str(out))
    card = {"recipe": "WikiMIA-24 builder (mia-tuner data build-wiki)", "config": asdict(config),
            "articles": {"member": sum(1 for v in titles.values() if v == MEMBER),
                         "nonmember": sum(1 for v in titles.values() if v == NON_MEMBER),
                         "in_both_ranges_dropped": in_both, "without_lead": missing,
                         "shorter_than_smallest_length": too_short},
            "lengths": counts, "splits": list(splits), "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card
