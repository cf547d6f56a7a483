"""The token-level reference methods (EZ, Ref-Min-K%, Ref-Min-K%++), FSD, `fused+ref`'s new
features and the adapted reference: each formula against a hand computation, then the whole
path on tiny random models (fine-tuned on non-members, chosen on validation, cached, checked)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import labelled_rows, make_tiny_model_dir, write_jsonl
from test_methods import FixedProvider

from mia_tuner.cli import main
from mia_tuner.config import MethodConfig
from mia_tuner.errors import MethodError
from mia_tuner.methods import ScoringContext, build_methods
from mia_tuner.methods.base import ADAPTED_REFERENCE, FINE_TUNED_TARGET, GROUPS, method_group
from mia_tuner.methods.reference_tokens import ErrorShare, ez_score
from mia_tuner.methods.token_stats import TokenStats


def stats(ids, logprobs, top1=None, mean=None, std=None) -> TokenStats:
    logprobs = np.asarray(logprobs, dtype=float)
    ids = np.asarray(ids)
    return TokenStats(token_ids=ids, logprobs=logprobs,
                      mean=np.zeros_like(logprobs) if mean is None else np.asarray(mean, float),
                      std=np.ones_like(logprobs) if std is None else np.asarray(std, float),
                      top1=ids[1:] if top1 is None else np.asarray(top1))


class Provider(FixedProvider):
    def __init__(self, table, fingerprint="ref"):
        super().__init__(table)
        self.loaded = type("L", (), {"fingerprint": fingerprint})()


def context(target: dict, reference: dict, **settings) -> ScoringContext:
    return ScoringContext(target=Provider(target, "target"), settings=MethodConfig(**settings),
                          reference=Provider(reference), same_tokenizer=True)


def score(name: str, ctx: ScoringContext, texts, adapted: bool = False):
    method = next(m for m in build_methods([name], ctx.settings) if getattr(m, "adapted", False) == adapted)
    return method.score(list(texts), ctx)


# ---------------------------------------------------------------- formulas


def test_ez_score_by_hand():
    d = np.array([0.5, -0.2, 0.3, -0.1])
    # errors at 0, 1, 3: P = 0.5, N = 0.2 + 0.1
    assert ez_score(d, np.array([True, True, False, True])) == pytest.approx(math.log(0.5 / 0.3))
    # one error only: every token counts, P = 0.8, N = 0.3
    assert ez_score(d, np.array([True, False, False, False])) == pytest.approx(math.log(0.8 / 0.3))
    # nothing moved: 0; one side empty: the floor of 1e-3 nats, never an infinity
    assert ez_score(np.zeros(4), np.ones(4, bool)) == 0.0
    assert ez_score(np.array([0.2, 0.3]), np.ones(2, bool)) == pytest.approx(math.log(0.5 / 1e-3))
    assert ez_score(np.array([-0.2, -0.3]), np.ones(2, bool)) == pytest.approx(math.log(1e-3 / 0.5))


def test_token_reference_methods_by_hand():
    text = "some text"
    ids = [7, 1, 2, 3, 4]
    # the target gets positions 0 and 2 right (top1 = next id), 1 and 3 wrong
    target = stats(ids, [-1.0, -2.0, -0.5, -3.0], top1=[1, 9, 3, 9], mean=[-1, -1, -1, -1], std=[1, 1, 0.5, 2])
    reference = stats(ids, [-1.5, -2.5, -0.2, -2.0], mean=[-2, -2, -2, -2], std=[1, 1, 1, 1])
    ctx = context({text: target}, {text: reference}, k=0.5)
    # d = target - reference log-probability per position: (0.5, 0.5, -0.3, -1.0)
    # EZ on the errors (positions 1 and 3): P = 0.5, N = 1.0
    assert score("ez", ctx, [text])[0] == pytest.approx(math.log(0.5 / 1.0))
    # Ref-Min-K% with k = 0.5: the two lowest of d: -1.0, -0.3
    assert score("ref-min-k%", ctx, [text])[0] == pytest.approx((-1.0 - 0.3) / 2)
    # Min-K%++ target: (0, -1, 1, -1) -> lowest two: -1, -1; reference: (0.5, -0.5, 1.8, 0) -> -0.5, 0
    assert score("ref-min-k%++", ctx, [text])[0] == pytest.approx(-1.0 - (-0.25))
    # the error share: 2 of 4 positions wrong (lower for members: the raw value is negated)
    assert ErrorShare(ctx.settings).score([text], ctx)[0] == pytest.approx(-0.5)


def test_token_methods_refuse_a_reference_that_tokenizes_otherwise():
    text = "some text"
    ctx = context({text: stats([7, 1, 2], [-1.0, -2.0])}, {text: stats([7, 5, 2], [-1.0, -2.0])})
    with pytest.raises(MethodError, match="tokenizer splits the text differently.*`ref` works"):
        score("ez", ctx, [text])


def test_a_truncated_pair_is_compared_on_the_positions_both_scored():
    text = "long text"
    target = stats([7, 1, 2, 3], [-1.0, -2.0, -3.0])
    reference = stats([7, 1, 2], [-2.0, -2.0])  # the reference read one token less
    ctx = context({text: target}, {text: reference}, k=1.0)
    assert score("ref-min-k%", ctx, [text])[0] == pytest.approx((1.0 + 0.0) / 2)


def test_fsd_is_the_likelihood_gained_by_fine_tuning_lower_for_members():
    text = "a text"
    ctx = ScoringContext(target=Provider({text: stats([1, 2, 3], [-3.0, -3.0])}), settings=MethodConfig())
    ctx.providers[FINE_TUNED_TARGET] = Provider({text: stats([1, 2, 3], [-2.0, -2.5])}, "tuned")
    # mean log-likelihood -2.25 after, -3 before: a gain of 0.75, negated (member: small gain)
    assert score("fsd", ctx, [text])[0] == pytest.approx(-0.75)


def test_adapted_twins_read_the_adapted_reference_and_use_labels():
    methods = build_methods(["ref", "ez", "loss"], MethodConfig(adapt_reference=True))
    assert [m.label for m in methods] == ["ref", "ez", "loss", "ref:adapted", "ez:adapted"]
    twin = methods[3]
    assert twin.reference_role == ADAPTED_REFERENCE and twin.uses_labels and not methods[0].uses_labels
    assert [method_group(m) for m in methods] == [GROUPS[2], GROUPS[2], GROUPS[0], GROUPS[3], GROUPS[3]]
    text = "t"
    ctx = context({text: stats([1, 2, 3], [-3.0, -3.0])}, {text: stats([1, 2, 3], [-1.0, -1.0])})
    ctx.providers[ADAPTED_REFERENCE] = Provider({text: stats([1, 2, 3], [-2.0, -2.0])}, "adapted")
    assert twin.score([text], ctx)[0] == pytest.approx(-1.0)  # NLL 3 - 2, negated
    assert methods[0].score([text], ctx)[0] == pytest.approx(-2.0)


def test_fused_ref_reads_the_token_features_only_with_the_same_tokenizer():
    fused_ref = build_methods(["fused+ref"], MethodConfig())[0]
    names = [m.label for m in fused_ref.base_methods()]
    assert {"ref", "ez", "ref-min-k%", "ref-min-k%++", "error-share"} <= set(names)
    ctx = ScoringContext(target=None, same_tokenizer=False)
    kept = [m.label for m in fused_ref.base_methods(ctx)]
    assert "ref" in kept and not {"ez", "ref-min-k%", "ref-min-k%++"} & set(kept)
    assert "ez" not in [m.label for m in build_methods(["fused"], MethodConfig())[0].base_methods()]


# ---------------------------------------------------------------- on tiny models, end to end


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """A tiny target, a reference of the same tokenizer (other weights) and a labelled set."""
    root = tmp_path_factory.mktemp("pair")
    make_tiny_model_dir(root / "target", seed=0)
    make_tiny_model_dir(root / "reference", seed=1)
    write_jsonl(root / "set.jsonl", labelled_rows(24))
    return root


def scores_argv(root: Path, tmp_path: Path, methods: str, *extra) -> list[str]:
    return ["scores", "--model", str(root / "target"), "--data", str(root / "set.jsonl"), "--device", "cpu",
            "--reference", str(root / "reference"), "--methods", methods, "--train-per-class", "16",
            "--test-per-class", "8", "--adapt-epochs", "2", "--adapt-grid", "full:1e-3,lora:1e-2",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), *extra]


def test_adapted_reference_is_chosen_on_validation_cached_and_checked(tiny_pair, tmp_path, capsys):
    assert main(scores_argv(tiny_pair, tmp_path, "ref,ez,fsd", "--adapt-reference")) == 0
    out = capsys.readouterr().out
    assert "adapted reference:" in out and "chosen among 4 candidates by validation AUROC" in out
    assert "FSD's fine-tuned target:" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    rows = metrics["methods"]
    assert {"ref", "ez", "fsd", "ref:adapted", "ez:adapted"} <= set(rows)
    card = metrics["extra"]["methods"]["ez:adapted"]["fine_tuned"]
    assert card["n_trained_on"] == 12 and card["n_validation"] == 8  # 16 - 4 non-members; 4 + 4
    assert len(card["candidates"]) == 4 and card["chosen"]["best"] == max(c["best"] for c in card["candidates"])
    # a re-run reads the chosen models from the cache and recomputes nothing
    assert main(scores_argv(tiny_pair, tmp_path, "ref,ez,fsd", "--adapt-reference")) == 0
    assert "Fine-tuning" not in capsys.readouterr().out
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())["extra"]["methods"]
    assert all(row["computed"] == 0 for row in again.values())
    # a damaged weights file of the adapted reference is refused, not read
    folder = next((tmp_path / "cache" / "fine-tuned").glob("reference-adapted-*"))
    weights = folder / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + bytes(16))
    rc = main(scores_argv(tiny_pair, tmp_path, "ref,ez", "--adapt-reference", "--no-cache", "--overwrite"))
    assert rc == 2 and "is damaged" in capsys.readouterr().err


def test_token_methods_need_the_targets_tokenizer(tiny_pair, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mia_tuner.run.same_tokenizer", lambda config: False)
    assert main(scores_argv(tiny_pair, tmp_path, "ez")) == 2
    assert "`ez` cannot run: the reference" in capsys.readouterr().err
    assert main(scores_argv(tiny_pair, tmp_path, "all")) == 0  # `all` leaves them out, `ref` stays
    rows = json.loads((tmp_path / "run" / "metrics.json").read_text())["methods"]
    assert "ref" in rows and not {"ez", "ref-min-k%", "ref-min-k%++"} & set(rows)


def test_a_learned_detector_below_chance_on_validation_is_flagged_not_flipped():
    from mia_tuner.metrics import wrong_way_warning
    from mia_tuner.run import validation_aurocs, wrong_way_warnings

    info = {"ez:adapted": {"fine_tuned": {"chosen": {"validation_auroc": {"ez:adapted": 0.42, "ref:adapted": 0.6}}}},
            "ref:adapted": {"fine_tuned": {"chosen": {"validation_auroc": {"ez:adapted": 0.42, "ref:adapted": 0.6}}}},
            "loss": {}}
    assert validation_aurocs(info) == {"ez:adapted": 0.42, "ref:adapted": 0.6}
    warnings = wrong_way_warnings(validation_aurocs(info))
    assert len(warnings) == 1 and "`ez:adapted` ranks its validation texts the wrong way round" in warnings[0]
    assert "not flipped" in warnings[0]
    assert wrong_way_warning("x", 0.5) is None and wrong_way_warning("x", None) is None


def test_the_grouped_table_marks_the_best_row_of_each_group():
    from mia_tuner.metrics import compute_metrics
    from mia_tuner.reports import BEST_MARK, grouped_table_text

    labels = np.array([1, 1, 0, 0])
    results = {name: compute_metrics(labels, np.array(s), n_bootstrap=0) for name, s in
               {"loss": [1, 2, 3, 4], "min-k%++": [4, 3, 2, 1], "ref": [4, 3, 1, 2], "blind": [1, 2, 2, 1]}.items()}
    groups = {"loss": GROUPS[0], "min-k%++": GROUPS[0], "ref": GROUPS[2], "blind": GROUPS[4]}
    lines = grouped_table_text(results, groups, GROUPS).splitlines()
    assert [line for line in lines if line.startswith("[")] == [f"[{GROUPS[0]}]", f"[{GROUPS[2]}]", f"[{GROUPS[4]}]"]
    marked = [line.split()[0] for line in lines if line.endswith(BEST_MARK)]
    assert marked == ["min-k%++"]  # a group of one row has no mark
