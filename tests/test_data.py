"""Tests of mia_tuner.data: loading, validation, hygiene, the evaluation split and corpora."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mia_tuner.config import DataConfig, SplitConfig
from mia_tuner.data import (
    MembershipSet,
    carve_validation,
    deduplicate,
    format_hygiene,
    hygiene_report,
    load_corpus,
    load_membership_set,
    make_split,
    passages_from_texts,
    python_docs_corpus,
    validate,
)
from mia_tuner.data.corpus import clean_text, drop_near_duplicates
from mia_tuner.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_skip_without_shared = pytest.mark.skipif(
    not (SHARED_DATA / "wikimia24").is_dir() or not (SHARED_DATA / "wikimia").is_dir(),
    reason=f"benchmark data not found at {SHARED_DATA} (expected ../shared/data next to the repo)",
)


def needs_shared(test):
    """The extra set: reads ../shared/data (marker `shared_data`), skipped in a clone without it."""
    return pytest.mark.shared_data(_skip_without_shared(test))

ROWS = [
    {"input": "The first member text.", "label": 1},
    {"input": "A non-member text from 2024.", "label": 0},
    {"input": "Another member text.", "label": 1},
    {"input": "Another non-member text.", "label": 0},
]


def toy_set(n_per_class: int = 20, name: str = "toy") -> MembershipSet:
    """A balanced set of distinct texts: member i and non-member i."""
    texts, labels = [], []
    for i in range(n_per_class):
        texts += [f"member text number {i}", f"non-member text number {i}"]
        labels += [1, 0]
    return MembershipSet(texts=texts, labels=labels, name=name)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- loading formats


def test_load_jsonl(tmp_path):
    file = write_jsonl(tmp_path / "tiny.jsonl", ROWS)
    ms = load_membership_set(str(file))
    assert ms.texts == tuple(r["input"] for r in ROWS)
    assert ms.labels == (1, 0, 1, 0)
    assert ms.name == f"{tmp_path.name}/tiny"
    assert ms.info["source"] == str(file)
    assert ms.info["columns"] == ["input", "label"]


def test_load_json_list_and_columns(tmp_path):
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(ROWS), encoding="utf-8")
    cols_file = tmp_path / "cols.json"
    cols_file.write_text(json.dumps({"input": [r["input"] for r in ROWS], "label": [1, 0, 1, 0]}))
    assert load_membership_set(rows_file).labels == (1, 0, 1, 0)
    assert load_membership_set(cols_file).texts == tuple(r["input"] for r in ROWS)


def test_load_csv_with_custom_columns(tmp_path):
    file = tmp_path / "tiny.csv"
    with file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "is_member"])
        for i, row in enumerate(ROWS):
            writer.writerow([i, row["input"], row["label"]])
    ms = load_membership_set(str(file), text_column="text", label_column="is_member")
    assert ms.labels == (1, 0, 1, 0)
    assert ms.texts[0] == ROWS[0]["input"]
    assert ms.info["text_column"] == "text"


def test_load_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = tmp_path / "tiny.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), file)
    ms = load_membership_set(DataConfig(path=str(file)))
    assert ms.labels == (1, 0, 1, 0)
    assert ms.info["source_type"] == "parquet"


def test_load_save_to_disk_dataset_dict_and_dataset(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"short": dataset, "long": dataset}).save_to_disk(str(tmp_path / "dd"))
    ms = load_membership_set(str(tmp_path / "dd"), split="short")
    assert ms.name == "dd/short" and ms.labels == (1, 0, 1, 0)
    assert ms.info["split"] == "short"
    dataset.save_to_disk(str(tmp_path / "single"))
    assert len(load_membership_set(str(tmp_path / "single"))) == 4


def test_folder_of_files_split_is_file_stem(tmp_path):
    write_jsonl(tmp_path / "32.jsonl", ROWS)
    write_jsonl(tmp_path / "64.jsonl", ROWS[:2])
    ms = load_membership_set(str(tmp_path), "64")
    assert len(ms) == 2 and ms.name == f"{tmp_path.name}/64"


def test_config_overrides_and_split_argument(tmp_path):
    import datasets

    datasets.DatasetDict({"a": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    config = DataConfig(path=str(tmp_path / "dd"), split="missing")
    assert len(load_membership_set(config, split="a")) == 4
    with pytest.raises(DataError, match="unknown data option"):
        load_membership_set(config, colour="red")


# --------------------------------------------------------------------------- real benchmark data


@needs_shared
@pytest.mark.parametrize("length, n_rows", [(32, 1558), (64, 1396), (128, 572), (256, 506)])
def test_real_wikimia24_split_counts(length, n_rows):
    ms = load_membership_set(str(SHARED_DATA / "wikimia24"), f"WikiMIA_length{length}")
    assert ms.name == f"wikimia24/WikiMIA_length{length}"
    assert len(ms) == n_rows
    assert ms.n_member == ms.n_nonmember == n_rows // 2


@needs_shared
@pytest.mark.parametrize("length, members, nonmembers", [(32, 387, 389), (64, 284, 258)])
def test_real_wikimia_jsonl_counts(length, members, nonmembers):
    ms = load_membership_set(str(SHARED_DATA / "wikimia" / f"{length}.jsonl"))
    assert ms.name == f"wikimia/{length}"
    assert (ms.n_member, ms.n_nonmember) == (members, nonmembers)


@needs_shared
def test_real_wikimia24_hygiene_matches_readme():
    """The README's duplicate counts: 32: 172 extra rows, 64: 157 (one text 26 times)."""
    for length, extra in [(32, 172), (64, 157), (128, 64), (256, 67)]:
        ms = load_membership_set(str(SHARED_DATA / "wikimia24"), f"WikiMIA_length{length}")
        dup = hygiene_report(ms)["duplicates"]
        assert dup["member_extra_copies"] + dup["nonmember_extra_copies"] == extra
        assert dup["in_both_classes"] == 0
    ms64 = load_membership_set(str(SHARED_DATA / "wikimia24"), "WikiMIA_length64")
    assert hygiene_report(ms64)["duplicates"]["max_copies_of_one_text"] == 26


@needs_shared
def test_real_wikimia24_128_split():
    """572 rows, 64 extra copies -> 263 / 245 distinct -> 245 per class -> 196 train / 49 test
    with the official cut (the default fills the test part: 100 per class)."""
    ms = load_membership_set(str(SHARED_DATA / "wikimia24"), "WikiMIA_length128")
    assert make_split(ms).report["test"] == {"member": 100, "nonmember": 100}
    split = make_split(ms, SplitConfig(fill_test_first=False))
    report = split.report
    assert report["duplicates_removed"]["duplicate_rows"] == 64
    assert report["before_balancing"] == {"member": 263, "nonmember": 245}
    assert report["after_balancing"] == {"member": 245, "nonmember": 245}
    assert report["train"] == {"member": 80, "nonmember": 80}
    assert report["test"] == {"member": 49, "nonmember": 49}
    assert (split.train.n_member, split.train.n_nonmember) == (80, 80)
    assert (split.test.n_member, split.test.n_nonmember) == (49, 49)
    assert not set(split.train.texts) & set(split.test.texts)
    assert len(set(split.test.texts)) == len(split.test)


@needs_shared
def test_real_wikimia24_without_dedupe_refuses_overlap():
    ms = load_membership_set(str(SHARED_DATA / "wikimia24"), "WikiMIA_length64")
    with pytest.raises(DataError, match="both train and test.*dedupe"):
        make_split(ms, dedupe=False)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad_label", [2, "x", "yes", "2", "", None, 0.5, float("nan"), "nan"])
def test_invalid_label_is_reported(bad_label):
    with pytest.raises(DataError, match=r"1 of 3 rows are invalid: 1 with a label that is not 0 or 1 \(row 3\)"):
        validate(["a", "b", "c"], [1, 0, bad_label])


def test_valid_label_types():
    import numpy as np

    texts, labels, skipped = validate(["a", "b", "c", "d"], [True, 0.0, np.int64(1), np.float32(0)])
    assert labels == [1, 0, 1, 0] and all(type(y) is int for y in labels)
    assert sum(skipped.values()) == 0


def test_string_labels_are_read_by_the_one_parser():
    """"1" / "0" (as CSV cells or hand-written JSON hold them) are labels wherever they come from."""
    texts, labels, _ = validate(["a", "b", "c", "d"], ["1", " 0 ", "1.0", "0"])
    assert labels == [1, 0, 1, 0] and all(type(y) is int for y in labels)


def test_empty_and_none_texts_are_reported_with_rows():
    with pytest.raises(DataError) as info:
        validate(["ok", "   ", None, 5, "fine"], [1, 0, 1, 0, 0])
    message = str(info.value)
    assert "3 of 5 rows are invalid" in message
    assert "2 with a text that is missing or not a string (rows 3, 4)" in message  # from 1
    assert "1 with an empty text or one with no visible character (row 2)" in message
    assert "skip_invalid=True" in message


def test_skip_invalid_counts_what_was_skipped():
    texts, labels, skipped = validate(
        ["ok", "", None, "bad label", "fine", "x"], [1, 0, 1, "x", 0, 2], skip_invalid=True
    )
    assert texts == ["ok", "fine"] and labels == [1, 0]
    assert skipped == {"non_string_text": 1, "empty_text": 1, "invalid_label": 2}


def test_skip_invalid_through_loader(tmp_path):
    rows = ROWS + [{"input": "", "label": 1}, {"input": "t", "label": 7}, {"label": 0}]
    file = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=r"bad.*3 of 7 rows are invalid"):
        load_membership_set(str(file))
    ms = load_membership_set(str(file), skip_invalid=True)
    assert len(ms) == 4
    assert ms.info["n_skipped"] == {"non_string_text": 1, "empty_text": 1, "invalid_label": 1}


def test_one_class_only_is_refused_even_when_skipping():
    with pytest.raises(DataError, match="only members"):
        validate(["a", "b"], [1, 1])
    with pytest.raises(DataError, match="only non-members .* after skipping 1 invalid rows"):
        validate(["a", "b", ""], [0, 0, 1], skip_invalid=True)


def test_empty_set_is_refused(tmp_path):
    with pytest.raises(DataError, match="empty"):
        validate([], [])
    with pytest.raises(DataError, match="empty after skipping 2"):
        validate(["", None], [0, 1], skip_invalid=True)


def test_missing_column_lists_available(tmp_path):
    file = write_jsonl(tmp_path / "tiny.jsonl", ROWS)
    with pytest.raises(DataError, match=r"no text column 'text'; available columns: \['input', 'label'\]"):
        load_membership_set(str(file), text_column="text")
    with pytest.raises(DataError, match=r"no label column 'member'"):
        load_membership_set(str(file), label_column="member")


def test_missing_split_lists_available(tmp_path):
    import datasets

    datasets.DatasetDict({"a": datasets.Dataset.from_list(ROWS), "b": datasets.Dataset.from_list(ROWS)}).save_to_disk(
        str(tmp_path / "dd")
    )
    with pytest.raises(DataError, match=r"no split 'c'; available splits: \['a', 'b'\]"):
        load_membership_set(str(tmp_path / "dd"), "c")
    with pytest.raises(DataError, match="several splits"):
        load_membership_set(str(tmp_path / "dd"))


def test_split_given_for_single_file_is_refused(tmp_path):
    file = write_jsonl(tmp_path / "tiny.jsonl", ROWS)
    with pytest.raises(DataError, match="single file and has no splits"):
        load_membership_set(str(file), "WikiMIA_length32")


def test_unknown_local_path(tmp_path):
    with pytest.raises(DataError, match="no such local file or folder"):
        load_membership_set(str(tmp_path / "nope.jsonl"))


def test_unsupported_extension_and_bad_json(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="unsupported file type"):
        load_membership_set(str(tmp_path / "x.txt"))
    (tmp_path / "broken.jsonl").write_text('{"input": "a", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_membership_set(str(tmp_path / "broken.jsonl"))


def test_unreachable_hub_name(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/nothing' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr("mia_tuner.hub.hub_unreachable", lambda: None)  # the hub answers, the set is not there
    with pytest.raises(DataError, match="neither a local file/folder nor reachable on the .*hub.*Couldn't reach"):
        load_membership_set("someone/nothing", "train")


def test_hub_name_fails_at_once_when_the_hub_cannot_be_reached(monkeypatch):
    import datasets

    def never(*args, **kwargs):
        raise AssertionError("load_dataset must not be tried (it retries for a minute)")

    monkeypatch.setattr(datasets, "load_dataset", never)
    monkeypatch.setattr("mia_tuner.hub.hub_unreachable", lambda: "huggingface.co unreachable (test)")
    with pytest.raises(DataError, match="no such local file or folder, and the Hugging Face hub.*unreachable"):
        load_membership_set("data/wikimia24-typo", "train")


def test_hub_dataset_through_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load(path, *args, **kwargs):
        calls.append(path)
        return datasets.DatasetDict({"WikiMIA_length32": datasets.Dataset.from_list(ROWS)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr("mia_tuner.hub.hub_unreachable", lambda: None)
    ms = load_membership_set("wjfu99/WikiMIA-24", "WikiMIA_length32")
    assert calls == ["wjfu99/WikiMIA-24"]
    assert ms.name == "WikiMIA-24/WikiMIA_length32" and ms.info["source_type"] == "hub"
    with pytest.raises(DataError, match="no split 'x'"):
        load_membership_set("wjfu99/WikiMIA-24", "x")


# --------------------------------------------------------------------------- hygiene and dedupe


def hand_made_set() -> MembershipSet:
    """m1 x3, m2 x1 (members); n1 x2, n2 x1 (non-members); 'both' once in each class."""
    texts = ["m1 a b", "m1 a b", "n1 c", "m2 d e f", "both g", "m1 a b", "n1 c", "n2 h", "both g"]
    labels = [1, 1, 0, 1, 1, 1, 0, 0, 0]
    return MembershipSet(texts=texts, labels=labels, name="hand")


def test_hygiene_counts_on_hand_made_set():
    report = hygiene_report(hand_made_set())
    assert (report["n_rows"], report["n_member"], report["n_nonmember"]) == (9, 5, 4)
    assert report["duplicates"] == {
        "member_extra_copies": 2,
        "nonmember_extra_copies": 1,
        "max_copies_of_one_text": 3,
        "in_both_classes": 1,
        "rows_in_both_classes": 2,
    }
    # member word lengths: 3, 3, 4, 2, 3
    assert report["words"]["member"] == {"mean": 3.0, "min": 2, "median": 3, "max": 4}
    assert report["words"]["nonmember"]["max"] == 2
    assert "tokens" not in report


def test_hygiene_with_tokenizer_and_text():
    report = hygiene_report(hand_made_set(), tokenizer=lambda text: list(text))
    assert report["tokens"]["member"]["max"] == len("m2 d e f")
    text = format_hygiene(report)
    assert "hand" in text and "2 among members, 1 among non-members" in text
    assert "labelled both member and non-member: 1 (2 rows)" in text
    assert "length in tokens" in text and "deduplicate" in text


def test_hygiene_with_hf_style_tokenizer():
    class Tokenizer:
        def encode(self, text, add_special_tokens=True):
            return text.split() + (["<s>"] if add_special_tokens else [])

    report = hygiene_report(hand_made_set(), tokenizer=Tokenizer())
    assert report["tokens"]["member"] == report["words"]["member"]


def test_deduplicate_keeps_first_and_drops_conflicts():
    cleaned, removed = deduplicate(hand_made_set())
    assert removed == {"duplicate_rows": 3, "conflicting_rows": 2, "conflicting_texts": 1}
    assert cleaned.texts == ("m1 a b", "n1 c", "m2 d e f", "n2 h")
    assert cleaned.labels == (1, 0, 1, 0)
    again, removed_again = deduplicate(cleaned)
    assert again == cleaned and sum(removed_again.values()) == 0


# --------------------------------------------------------------------------- split


def test_split_sizes_balance_and_no_overlap():
    ms = MembershipSet(
        texts=[f"m{i}" for i in range(50)] + [f"n{i}" for i in range(30)], labels=[1] * 50 + [0] * 30, name="s"
    )
    split = make_split(ms, SplitConfig(seed=1, train_fraction=0.5, max_train_per_class=10, max_test_per_class=12))
    assert split.report["after_balancing"] == {"member": 30, "nonmember": 30}
    assert split.report["train"] == {"member": 10, "nonmember": 10}
    assert split.report["test"] == {"member": 12, "nonmember": 12}
    assert not set(split.train.texts) & set(split.test.texts)
    assert split.train.name == "s/train" and split.test.name == "s/test"
    assert split.test.info["evaluation_split"]["role"] == "test"
    assert split.test.labels[:4] == (1, 0, 1, 0)


def test_split_removes_duplicates_before_splitting():
    base = toy_set(30)
    doubled = MembershipSet(texts=base.texts * 3, labels=base.labels * 3, name="x3")
    split = make_split(doubled, SplitConfig(max_train_per_class=100, max_test_per_class=100))
    assert split.report["duplicates_removed"]["duplicate_rows"] == 120
    assert split.report["train"] == {"member": 24, "nonmember": 24}
    assert split.report["test"] == {"member": 6, "nonmember": 6}
    assert not set(split.train.texts) & set(split.test.texts)


def test_split_is_deterministic_and_seed_sensitive():
    ms = toy_set(100)
    first, second = make_split(ms, SplitConfig(seed=7)), make_split(ms, SplitConfig(seed=7))
    assert first.train == second.train and first.test == second.test
    other = make_split(ms, SplitConfig(seed=8))
    assert other.test.texts != first.test.texts


def test_few_shot_keeps_the_test_part():
    ms = toy_set(100)
    full = make_split(ms, SplitConfig(seed=3))
    few = make_split(ms, SplitConfig(seed=3, max_train_per_class=4))
    assert few.test == full.test
    assert few.report["train"] == {"member": 4, "nonmember": 4}
    assert set(few.train.texts) <= set(full.train.texts)


def test_a_large_set_fills_the_test_part_first():
    """250 per class, caps 80 + 100: the 80/20 cut would leave 50 test texts; the test part is
    filled to 100 with the texts a 0.6 cut gives (the demo's split), and train keeps 80."""
    ms = toy_set(250)
    filled = make_split(ms, SplitConfig(seed=5))
    assert filled.report["test"] == {"member": 100, "nonmember": 100}
    assert filled.report["train"] == {"member": 80, "nonmember": 80}
    assert filled.test == make_split(ms, SplitConfig(seed=5, train_fraction=0.6)).test
    assert not set(filled.train.texts) & set(filled.test.texts)
    paper = make_split(ms, SplitConfig(seed=5, fill_test_first=False))
    assert paper.report["test"] == {"member": 50, "nonmember": 50}
    small = make_split(toy_set(100), SplitConfig(seed=5))  # cannot fill both caps: 80/20 cut
    assert small.report["test"] == {"member": 20, "nonmember": 20}


def test_split_without_dedupe_on_clean_set_and_bad_config():
    ms = toy_set(10)
    assert len(make_split(ms, dedupe=False).test) == 4
    with pytest.raises(DataError, match="train_fraction"):
        make_split(ms, SplitConfig(train_fraction=1.0))
    with pytest.raises(DataError, match="too few"):
        make_split(toy_set(1))


def test_carve_validation():
    train = make_split(toy_set(100)).train
    rest, validation = carve_validation(train, per_class=8, seed=0)
    assert (validation.n_member, validation.n_nonmember) == (8, 8)
    assert (rest.n_member, rest.n_nonmember) == (72, 72)
    assert not set(rest.texts) & set(validation.texts)
    assert set(rest.texts) | set(validation.texts) == set(train.texts)
    assert carve_validation(train, 8, seed=0)[1] == validation
    assert carve_validation(train, 8, seed=1)[1].texts != validation.texts
    with pytest.raises(DataError, match="cannot take 80"):
        carve_validation(train, per_class=80, seed=0)


# --------------------------------------------------------------------------- corpus


def test_passages_from_texts_exact_words_and_distinct():
    texts = ["one two three four five six seven", "  a   b\nc d e ", "one two three four five six seven"]
    assert passages_from_texts(texts, 3) == ["one two three", "four five six", "a b c"]
    with pytest.raises(DataError, match="n_words"):
        passages_from_texts(texts, 0)


def test_clean_text_drops_code_and_markup():
    raw = (
        "Title\n*****\n\nUse :func:`len` to count ``items`` in *s*.\n\n"
        "   for x in y:\n       print(x)\n>>> 1 + 1\n+----+----+\n| a  | b  |\n"
        "* A list item that goes\n  on to a second line.\n"
    )
    assert clean_text(raw) == "Use len to count items in s. * A list item that goes on to a second line."


def test_python_docs_corpus_has_enough_distinct_passages():
    passages = python_docs_corpus(64, min_passages=1000)
    assert len(passages) >= 1000
    assert all(len(p.split()) == 64 for p in passages)
    assert len(set(passages)) == len(passages)
    assert ">>>" not in " ".join(passages)
    assert python_docs_corpus(64) == passages  # deterministic
    with pytest.raises(DataError, match="fewer than"):
        python_docs_corpus(64, min_passages=10**7)


def test_no_two_corpus_passages_share_a_long_span():
    passages = python_docs_corpus(64)
    seen = set()
    for passage in passages:
        words = passage.split()
        grams = {tuple(words[i : i + 13]) for i in range(len(words) - 12)}
        assert seen.isdisjoint(grams)
        seen |= grams
    assert drop_near_duplicates(["a b c d", "x a b c d y"], ngram=3) == ["a b c d"]


def test_load_corpus_txt_and_jsonl(tmp_path):
    (tmp_path / "c.txt").write_text("w1 w2 w3 w4\nw5\n\nv1 v2 v3\n\n\nu1 u2\n", encoding="utf-8")
    assert load_corpus(tmp_path / "c.txt", 2) == ["w1 w2", "w3 w4", "v1 v2", "u1 u2"]
    write_jsonl(tmp_path / "c.jsonl", [{"text": "a b c d e"}, {"text": "f g"}])
    assert load_corpus(tmp_path / "c.jsonl", 2) == ["a b", "c d", "f g"]
    write_jsonl(tmp_path / "bad.jsonl", [{"body": "a b"}])
    with pytest.raises(DataError, match="'text' field"):
        load_corpus(tmp_path / "bad.jsonl", 2)
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(tmp_path / "none.txt", 2)
    with pytest.raises(DataError, match="at least 50 words"):
        load_corpus(tmp_path / "c.txt", 50)
