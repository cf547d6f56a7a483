"""Tests of mia_tuner.training.losses against hand computations in plain python."""

from __future__ import annotations

import math

import pytest
import torch

from mia_tuner.training import losses as L


def _log_softmax(row):
    """Plain-python log-softmax of a list of floats."""
    top = max(row)
    norm = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - norm for x in row]


# ---------------------------------------------------------------- weighted LM loss

# One sequence of 4 tokens over a vocabulary of 3: 3 targets (label positions 1, 2, 3).
TOY_LOGITS = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [0.0, 0.0, 3.0], [9.0, 9.0, 9.0]]
TOY_LABELS = [2, 1, 2, 0]


def _toy_nll():
    """NLL of label t predicted by logits t-1, for t = 1, 2, 3."""
    return [-_log_softmax(TOY_LOGITS[t - 1])[TOY_LABELS[t]] for t in (1, 2, 3)]


def test_weighted_lm_loss_three_tokens_by_hand():
    nll = _toy_nll()
    logits = torch.tensor([TOY_LOGITS])
    labels = torch.tensor([TOY_LABELS])
    mask = torch.ones(1, 4, dtype=torch.long)
    # answer_start = 2: label 1 (prompt) weighted 0.01, labels 2 and 3 (answer, end) weighted 1
    got = L.weighted_lm_loss(logits, labels, mask, torch.tensor([2]))
    expected = (0.01 * nll[0] + nll[1] + nll[2]) / 3
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # answer_start = 3: labels 1 and 2 down-weighted
    got = L.weighted_lm_loss(logits, labels, mask, torch.tensor([3]), pre_answer_weight=0.5)
    assert got.item() == pytest.approx((0.5 * nll[0] + 0.5 * nll[1] + nll[2]) / 3, rel=1e-6)


def test_weighted_lm_loss_ignores_padding_and_divides_by_real_count():
    nll = _toy_nll()
    logits = torch.tensor([TOY_LOGITS, TOY_LOGITS])
    labels = torch.tensor([TOY_LABELS, TOY_LABELS])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])  # second: last token is padding
    got = L.weighted_lm_loss(logits, labels, mask, torch.tensor([2, 2]))
    assert got[0].item() == pytest.approx((0.01 * nll[0] + nll[1] + nll[2]) / 3, rel=1e-6)
    assert got[1].item() == pytest.approx((0.01 * nll[0] + nll[1]) / 2, rel=1e-6)
    labels[0, 3] = L.IGNORE_INDEX  # -100 labels count as padding too
    got = L.weighted_lm_loss(logits, labels, torch.ones(2, 4, dtype=torch.long), torch.tensor([2, 2]))
    assert got[0].item() == pytest.approx((0.01 * nll[0] + nll[1]) / 2, rel=1e-6)


def test_weighted_lm_loss_rejects_misaligned_logits():
    with pytest.raises(ValueError, match="soft-prompt"):
        L.weighted_lm_loss(torch.zeros(1, 6, 3), torch.zeros(1, 4, dtype=torch.long),
                           torch.ones(1, 4), torch.tensor([2]))


# ---------------------------------------------------------------- classification and error


def test_answer_classification_loss_by_hand():
    pair = [[2.0, -1.0], [0.5, 1.5]]  # (No, Yes) logits
    got = L.answer_classification_loss(torch.tensor(pair), torch.tensor([True, False]))
    expected = (-_log_softmax(pair[0])[1] - _log_softmax(pair[1])[0]) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)
    as_ints = L.answer_classification_loss(torch.tensor(pair), torch.tensor([1, 0]))
    assert as_ints.item() == pytest.approx(got.item())


def test_error_loss_with_given_probabilities():
    yes_id, no_id = 2, 1
    probs = torch.tensor([[0.1, 0.6, 0.2, 0.1], [0.4, 0.2, 0.3, 0.1]])
    got = L.error_loss(probs.log(), yes_id, no_id, torch.tensor([1, 0]))
    expected = (-math.log(1 - 0.6) - math.log(1 - 0.3)) / 2
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # raw logits give the same value (the function normalises over the full vocabulary)
    shifted = probs.log() + 7.0
    got = L.error_loss(shifted, yes_id, no_id, torch.tensor([1, 0]))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_error_loss_is_finite_with_gradient_when_p_is_one():
    logits = torch.tensor([[0.0, 200.0, 0.0, 0.0], [0.0, 0.0, 1e4, 0.0]], requires_grad=True)
    log_probs = torch.log_softmax(logits, dim=-1)
    assert log_probs[0, 1].exp().item() == 1.0  # p(No | member) is exactly 1 in float32
    loss = L.error_loss(log_probs, 2, 1, torch.tensor([True, False]))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 100
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---------------------------------------------------------------- hybrid (pipeline A)


def test_hybrid_aligned_loss_combines_the_three_terms():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 7, requires_grad=True)
    input_ids = torch.randint(0, 7, (4, 5))
    mask = torch.ones(4, 5, dtype=torch.long)
    mask[3, 4] = 0
    start = torch.tensor([3, 2, 4, 3])
    member = torch.tensor([1, 1, 0, 0])
    yes_id, no_id = 5, 6
    total, parts = L.hybrid_aligned_loss(logits, input_ids, mask, start, member, yes_id, no_id,
                                         lm_weight=0.5, classification_weight=2.0, error_weight=3.0)
    per_seq = L.weighted_lm_loss(logits, input_ids, mask, start)
    lm = ((per_seq[0] + per_seq[1]) / 2 + (per_seq[2] + per_seq[3]) / 2) / 2
    at = torch.stack([logits[b, start[b] - 1] for b in range(4)])
    cls = L.answer_classification_loss(at[:, [no_id, yes_id]], member)
    err = L.error_loss(torch.log_softmax(at, -1), yes_id, no_id, member)
    assert parts["lm"] == pytest.approx(lm.item(), rel=1e-6)
    assert parts["classification"] == pytest.approx(cls.item(), rel=1e-6)
    assert parts["error"] == pytest.approx(err.item(), rel=1e-6)
    assert total.item() == pytest.approx(0.5 * lm.item() + 2 * cls.item() + 3 * err.item(), rel=1e-6)
    assert parts["total"] == pytest.approx(total.item())
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_answer_logits_takes_the_position_before_the_answer():
    logits = torch.arange(2 * 4 * 1, dtype=torch.float).reshape(2, 4, 1)
    assert L.answer_logits(logits, torch.tensor([1, 4]))[:, 0].tolist() == [0.0, 7.0]
    with pytest.raises(ValueError):
        L.answer_logits(logits, torch.tensor([0, 2]))


# ---------------------------------------------------------------- pipeline B


def _contrastive_by_hand(z, member, tau=1.0, scale=10.0):
    """The contrastive loss with explicit loops."""
    n, total = len(z), 0.0
    for i in range(n):
        same = other = 0.0
        for j in range(n):
            if j == i:
                continue
            e = math.exp(math.exp(-abs(z[i] - z[j]) / scale) / tau)
            other += e
            if member[j] == member[i]:
                same += e
        total += -math.log(same / other)
    return total / n


@pytest.mark.parametrize("tau,scale", [(1.0, 10.0), (0.5, 1.0), (2.0, 0.3)])
def test_contrastive_loss_matches_hand_loops(tau, scale):
    z = [1.2, 0.9, 2.5, 3.1]
    member = [1, 1, 0, 0]
    got = L.contrastive_membership_loss(torch.tensor(z), torch.tensor(member), tau, scale)
    assert got.item() == pytest.approx(_contrastive_by_hand(z, member, tau, scale), rel=1e-6)


def test_contrastive_loss_unbalanced_and_interleaved():
    z = [0.3, 2.0, 0.4, 1.9, 0.35]
    member = [True, False, True, False, True]
    got = L.contrastive_membership_loss(torch.tensor(z), torch.tensor(member), distance_scale=0.5)
    assert got.item() == pytest.approx(_contrastive_by_hand(z, member, 1.0, 0.5), rel=1e-6)


def test_contrastive_loss_needs_two_per_class():
    with pytest.raises(ValueError, match="at least 2"):
        L.contrastive_membership_loss(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 0, 0]))


def test_chance_value():
    assert L.chance_contrastive_loss(8) == pytest.approx(-math.log(7 / 15))
    assert round(L.chance_contrastive_loss(8), 3) == 0.762
    for b in (2, 3, 8):
        equal = torch.full((2 * b,), 1.7)
        member = torch.tensor([1] * b + [0] * b)
        got = L.contrastive_membership_loss(equal, member)
        assert got.item() == pytest.approx(L.chance_contrastive_loss(b), rel=1e-6)
        assert L.defensive_loss(equal, member).item() == pytest.approx(0.0, abs=1e-6)
    unbalanced = torch.tensor([1, 1, 1, 0, 0])
    assert L.chance_contrastive_loss_for(unbalanced) == pytest.approx(
        L.contrastive_membership_loss(torch.zeros(5), unbalanced).item(), rel=1e-6
    )


@pytest.mark.parametrize("n_members,n_non", [(3, 2), (5, 2), (2, 6), (8, 8)])
def test_chance_value_for_any_batch_by_hand(n_members, n_non):
    """Σ_c (n_c / N) · −ln((n_c − 1) / (N − 1)), written out per class (docs/safeguards.md)."""
    n = n_members + n_non
    by_hand = (n_members / n) * -math.log((n_members - 1) / (n - 1)) \
        + (n_non / n) * -math.log((n_non - 1) / (n - 1))
    member = torch.tensor([1] * n_members + [0] * n_non)
    assert L.chance_contrastive_loss_for(member) == pytest.approx(by_hand, rel=1e-12)
    assert L.defensive_loss(torch.full((n,), -0.3), member).item() == pytest.approx(0.0, abs=1e-6)


def test_defensive_loss_is_distance_to_chance():
    z, member = [1.0, 1.1, 3.0, 3.2], [1, 1, 0, 0]
    got = L.defensive_loss(torch.tensor(z), torch.tensor(member), distance_scale=1.0)
    expected = abs(_contrastive_by_hand(z, member, 1.0, 1.0) + math.log(1 / 3))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_hinge_loss():
    member = torch.tensor([1, 1, 0, 0])
    assert L.hinge_loss(torch.tensor([1.0, 2.0, 3.0, 4.0]), member).item() == 0.0  # members lower
    got = L.hinge_loss(torch.tensor([3.0, 5.0, 1.0, 2.0]), member)
    assert got.item() == pytest.approx(4.0 - 1.5)


def test_base_pipeline_loss_and_gradients():
    z = torch.tensor([2.0, 2.2, 1.0, 1.1], requires_grad=True)
    member = torch.tensor([1, 1, 0, 0])
    total, parts = L.base_pipeline_loss(z, member, contrastive_weight=2.0, hinge_weight=0.5)
    ctr = _contrastive_by_hand([2.0, 2.2, 1.0, 1.1], [1, 1, 0, 0])
    assert parts["contrastive"] == pytest.approx(ctr, rel=1e-6)
    assert parts["hinge"] == pytest.approx(2.1 - 1.05, rel=1e-6)
    assert total.item() == pytest.approx(2 * ctr + 0.5 * (2.1 - 1.05), rel=1e-6)
    total.backward()
    assert torch.isfinite(z.grad).all()
    assert z.grad[:2].sum() > 0 > z.grad[2:].sum()  # descent lowers member losses


def test_gradients_finite_with_equal_losses():
    z = torch.full((4,), 0.5, requires_grad=True)
    loss = L.defensive_loss(z, torch.tensor([1, 1, 0, 0])) + L.contrastive_membership_loss(
        z, torch.tensor([1, 1, 0, 0])
    )
    loss.backward()
    assert torch.isfinite(z.grad).all()
