"""The WikiMIA-24 builder (offline file and a client in wikipedia-api's shape), date masking,
event pairing, the shift measures and the grouped split. No network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mia_tuner.cli import main
from mia_tuner.config import SplitConfig
from mia_tuner.data import load_membership_set, make_split
from mia_tuner.data.shift import (blind_cv_scores, debias, event_key, mask_dates, pair_by_event,
                                  shift_report, year_scores)
from mia_tuner.data.types import MembershipSet
from mia_tuner.data.wiki import (OfflinePages, OnlinePages, WikiBuildConfig, build_wiki, buckets,
                                 month_range)
from mia_tuner.errors import DataError
from mia_tuner.metrics import compute_metrics

PAGES = Path(__file__).parent / "fixtures" / "wiki_pages.jsonl"
RANGES = dict(members="2015-01:2015-02", non_members="2024-03:2024-04")


# ---------------------------------------------------------------- masking, keys, pairing


@pytest.mark.parametrize("text,expected", [
    ("The 2016 Boston Marathon was held on April 18, 2016.",
     "The [YEAR] Boston Marathon was held on [DATE]."),
    ("It began on 5 March 2024 and ended in May 2024.", "It began on [DATE] and ended in [DATE]."),
    ("The 2015–16 season was the 48th edition.", "The [YEAR] season was the [ORD] edition."),
    ("the eighteenth conference and the twenty-first race", "the [ORD] conference and the [ORD] race"),
    ("Founded in the 1990s, it has 2500 members.", "Founded in the [YEAR], it has 2500 members."),
    ("Held on March 11 and 12 May, in May.", "Held on [DATE] and [DATE], in May."),
])
def test_mask_dates(text, expected):
    assert mask_dates(text) == expected


def test_event_key_matches_the_same_event_across_years():
    a = event_key("The 2016 Boston Marathon was the 120th running of the race.")
    b = event_key("The 2024 Boston Marathon was held on 15 April 2024.")
    assert a == b == "boston marathon"
    assert event_key("Floods.") is None and event_key("The 2016 floods were severe.") is None


def _toy(texts_labels):
    return MembershipSet(texts=[t for t, _ in texts_labels], labels=[y for _, y in texts_labels])


def test_pair_by_event_keeps_balanced_pairs_only():
    data = _toy([("The 2016 Boston Marathon was a race.", 1), ("The 2015 Boston Marathon was a race too.", 1),
                 ("The 2024 Boston Marathon was a race.", 0), ("The 2016 Rio Olympics were games.", 1),
                 ("The 2024 Paris Olympics were games.", 0)])
    paired = pair_by_event(data)
    assert paired.n_member == paired.n_nonmember == 1
    assert {event_key(t) for t in paired.texts} == {"boston marathon"}
    assert paired.info["paired_events"] == 1


def test_debias_drops_texts_masking_makes_identical_across_classes():
    data = _toy([("The 2016 Paris Open was held in Paris.", 1), ("The 2024 Paris Open was held in Paris.", 0),
                 ("The 2015 Epsom Derby was won by a horse.", 1), ("The 2024 Epsom Derby was run in the rain.", 0)])
    out = debias(data, mask=True, paired=True)
    assert list(out.texts) == ["The [YEAR] Epsom Derby was won by a horse.",
                               "The [YEAR] Epsom Derby was run in the rain."]


# ---------------------------------------------------------------- shift measures


def test_year_heuristic_orientation_and_masking():
    data = _toy([("Held in 2015.", 1), ("Held in 2016, again.", 1), ("Held in 2024.", 0),
                 ("No date here.", 0)])
    scores = year_scores(data.texts)
    # minus the latest year; the text without a year gets the median of the others (-2016)
    np.testing.assert_array_equal(scores, [-2015, -2016, -2024, -2016])
    assert compute_metrics(np.array(data.labels), scores, n_bootstrap=0).auroc == pytest.approx(0.875)
    masked = year_scores([mask_dates(t) for t in data.texts])
    assert np.all(masked == masked[0])


def test_blind_cv_keeps_an_event_in_one_fold():
    texts, labels = [], []
    for i in range(6):
        texts += [f"The 2015 Event{i} Cup was a match of team{i}.", f"The 2024 Event{i} Cup was a match of team{i}."]
        labels += [1, 0]
    masked = MembershipSet(texts=[mask_dates(t) for t in texts], labels=labels)
    scores = blind_cv_scores(masked, folds=3)
    # twins are identical once masked and share a fold, so each pair gets one score: AUROC 0.5
    assert np.allclose(scores[0::2], scores[1::2])
    report = shift_report(MembershipSet(texts=texts, labels=labels), folds=3)
    assert report["year_auroc"] == 1.0 and report["member_with_year"] == 1.0


def test_grouped_split_keeps_twins_together():
    texts, labels = [], []
    for i in range(10):
        texts += [f"The 2015 Alpha{i} Games were held.", f"The 2024 Alpha{i} Games were held again."]
        labels += [1, 0]
    data = MembershipSet(texts=texts, labels=labels)
    split = make_split(data, SplitConfig(train_fraction=0.6, group_by="event", seed=3))
    train_events = {event_key(t) for t in split.train.texts}
    test_events = {event_key(t) for t in split.test.texts}
    assert not train_events & test_events and len(test_events) == 4
    with pytest.raises(DataError, match="group_by"):
        make_split(data, SplitConfig(group_by="title"))


# ---------------------------------------------------------------- builder


def test_month_range_and_buckets():
    assert month_range("2015-11:2016-02") == [(2015, 11), (2015, 12), (2016, 1), (2016, 2)]
    for bad in ("2015-13:2016-01", "2016-01:2015-01", "2015/01-2016/01"):
        with pytest.raises(DataError, match="month"):
            month_range(bad)
    text = " ".join(f"w{i}" for i in range(70))
    assert [n for n, _ in buckets(text, (32, 64, 128), nested=False)] == [64]
    assert [n for n, _ in buckets(text, (32, 64, 128), nested=True)] == [32, 64]
    assert buckets("too short", (32,), nested=False) == []


def _check_built(out: Path, card: dict, lengths=(32, 64)):
    assert card["articles"]["in_both_ranges_dropped"] == 1  # "Long-running Dispute"
    assert card["articles"]["shorter_than_smallest_length"] == 1  # "2015 Tiny Event"
    for n in lengths:
        rows = [json.loads(line) for line in (out / "jsonl" / f"{n}.jsonl").read_text().splitlines()]
        assert all(len(r["input"].split()) == n for r in rows)
        assert sum(r["label"] for r in rows) * 2 == len(rows)  # balanced
        assert len({r["input"] for r in rows}) == len(rows)  # no duplicates
        if rows:
            data = load_membership_set(str(out), split=f"WikiMIA_length{n}")
            assert sorted(data.texts) == sorted(r["input"] for r in rows)


def test_offline_build(tmp_path):
    config = WikiBuildConfig(**RANGES, lengths=(32, 64))
    card = build_wiki(OfflinePages(PAGES), config, tmp_path / "set")
    _check_built(tmp_path / "set", card)
    assert card["lengths"]["64"]["member"] >= 2


def test_offline_build_masked_and_paired(tmp_path):
    config = WikiBuildConfig(**RANGES, lengths=(32, 64), nested=True, mask_dates=True, paired=True)
    card = build_wiki(OfflinePages(PAGES), config, tmp_path / "set")
    _check_built(tmp_path / "set", card)
    rows = [json.loads(line) for line in (tmp_path / "set" / "jsonl" / "32.jsonl").read_text().splitlines()]
    assert rows and not any(ch.isdigit() for r in rows for ch in r["input"].replace("[ORD]", ""))
    by_class = {y: sorted(event_key(r["title"]) for r in rows if r["label"] == y) for y in (0, 1)}
    assert by_class[0] == by_class[1]  # every member's event has a non-member twin


class FakePage:
    """A page as wikipedia-api returns it: title, ns, exists(), summary, categorymembers."""

    def __init__(self, pages, title):
        self._pages, self.title = pages, title
        self.ns = 14 if title.startswith("Category:") else 0

    def exists(self):
        return self.title in self._pages.titles

    @property
    def summary(self):
        return self._pages.leads.get(self.title, "")

    @property
    def categorymembers(self):
        self._pages.calls += 1
        return {t: FakePage(self._pages, t) for t in self._pages.children.get(self.title, [])}


class FakeClient:
    """wikipediaapi.Wikipedia's `page(title)` over the fixture; can fail its first calls."""

    def __init__(self, fail_first: int = 0):
        rows = [json.loads(line) for line in PAGES.read_text().splitlines()]
        self.titles = {r["title"] for r in rows}
        self.leads = {r["title"]: r["lead"] for r in rows}
        self.children: dict[str, list[str]] = {}
        for r in rows:
            for parent in r["categories"]:
                self.children.setdefault(parent, []).append(r["title"])
        self.fail_first, self.calls = fail_first, 0

    def page(self, title):
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionError("simulated timeout")
        return FakePage(self, title)


class NoNetwork:
    def page(self, title):
        raise AssertionError(f"fetched {title!r} although it is cached")


def test_online_build_retries_caches_and_resumes(tmp_path):
    config = WikiBuildConfig(**RANGES, lengths=(32, 64))
    cache = tmp_path / "fetch-cache"
    client = FakeClient(fail_first=1)
    online = build_wiki(OnlinePages(cache, client=client, min_interval=0.0), config, tmp_path / "a")
    offline = build_wiki(OfflinePages(PAGES), config, tmp_path / "b")
    assert online["lengths"] == offline["lengths"] and online["articles"] == offline["articles"]
    assert (cache / "pages.jsonl").is_file() and (cache / "categories.jsonl").is_file()
    again = build_wiki(OnlinePages(cache, client=NoNetwork(), min_interval=0.0), config, tmp_path / "c")
    assert again["lengths"] == online["lengths"]


def test_online_gives_up_with_a_clear_error(tmp_path):
    source = OnlinePages(tmp_path / "cache", client=FakeClient(fail_first=10), min_interval=0.0, attempts=2)
    with pytest.raises(DataError, match="failed 2 times"):
        source.lead("2015 Northvale Marathon")


def test_online_needs_a_user_agent(tmp_path, monkeypatch):
    pytest.importorskip("wikipediaapi")
    with pytest.raises(DataError, match="user agent"):
        OnlinePages(tmp_path, user_agent="")


# ---------------------------------------------------------------- CLI


def test_cli_build_then_check(tmp_path, capsys):
    out = tmp_path / "built"
    assert main(["data", "build-wiki", *sum((["--" + k.replace("_", "-"), v] for k, v in RANGES.items()), []),
                 "--pages", str(PAGES), "--out", str(out), "--lengths", "32,64"]) == 0
    assert "length 64:" in capsys.readouterr().out
    assert main(["data", "check", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "== built/WikiMIA_length64" in printed and "Shift: blind baseline AUROC" in printed
    assert "Shift: not measured" in printed  # the 1 + 1 length-32 split cannot be cross-validated


def test_cli_build_rejects_a_bad_range(tmp_path, capsys):
    assert main(["data", "build-wiki", "--members", "2015-1:2016-12", "--non-members", "2024-03:2024-12",
                 "--pages", str(PAGES), "--out", str(tmp_path / "x")]) == 2
    assert "month range" in capsys.readouterr().err
