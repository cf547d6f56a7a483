"""The losses of MIA-Tuner as pure torch functions (no model inside).

Index conventions (used by every function here and by ``mia_tuner.tuner.prompts``):

* ``input_ids`` / ``labels`` have shape (B, T) and ``logits`` (B, T, V) are aligned with them:
  ``logits[b, t]`` is the model's output *at* input position ``t``, i.e. the prediction of the
  token at position ``t + 1``. (With a peft soft prompt the model returns ``n_virtual + T``
  positions: drop the first ``n_virtual`` before calling these functions.)
* ``answer_start[b]`` is an index in that same unshifted input/label space: the position of the
  first answer token ("Yes"/"No") in ``input_ids[b]``. It is predicted by ``logits[b,
  answer_start[b] - 1]``, the output at the last prompt token, which we call the *answer
  position* (at test time, with the prompt alone as input, it is the last position).
* Membership labels ``is_member`` are a (B,) tensor of bools or 0/1 numbers; 1 = member.
* Pipeline A's two answer logits are ordered (No, Yes): index 0 = No, 1 = Yes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # labels equal to this are not targets (same convention as transformers)
_MIN_LOG = -1e4  # floor for log(1 - p): keeps the error loss finite when p == 1 exactly


# ---------------------------------------------------------------- helpers


def _as_bool(is_member: torch.Tensor) -> torch.Tensor:
    """Membership labels as a bool tensor (accepts bools, ints or floats equal to 0/1)."""
    is_member = torch.as_tensor(is_member)
    return is_member if is_member.dtype == torch.bool else is_member != 0


def _check_two_classes(member: torch.Tensor, minimum: int) -> None:
    """Raise ValueError unless both classes have at least ``minimum`` elements."""
    n_members = int(member.sum())
    n_non = int(member.numel() - n_members)
    if n_members < minimum or n_non < minimum:
        raise ValueError(
            f"need at least {minimum} members and {minimum} non-members in the batch, "
            f"got {n_members} and {n_non}"
        )


def answer_logits(logits: torch.Tensor, answer_start: torch.Tensor) -> torch.Tensor:
    """The (B, V) output at each answer position: ``logits[b, answer_start[b] - 1]``."""
    answer_start = torch.as_tensor(answer_start, device=logits.device).long()
    if bool((answer_start < 1).any()) or bool((answer_start >= logits.shape[1] + 1).any()):
        raise ValueError("answer_start must lie in [1, T] (the answer needs a prompt before it)")
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, answer_start - 1]


def yes_no_logits(answer_logits_full: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """The (B, 2) logits of (No, Yes) taken from the full-vocabulary answer logits."""
    return answer_logits_full[:, [no_id, yes_id]]


# ---------------------------------------------------------------- pipeline A (aligned models)


def weighted_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor,
    answer_start: torch.Tensor,
    pre_answer_weight: float = 0.01,
) -> torch.Tensor:
    """Per-sequence (B,) weighted next-token NLL of pipeline A's language-model term.

    The target at label position ``t`` (1 <= t < T) is ``labels[b, t]``, predicted by
    ``logits[b, t - 1]``; it is real when ``attention_mask[b, t] == 1`` and ``labels[b, t] !=
    -100``. Its NLL is weighted ``pre_answer_weight`` when ``t < answer_start[b]`` (prompt and
    template tokens) and 1 from the first answer token on. Loss = Σ weight·NLL over real targets
    divided by the *number* of real targets (not by the sum of the weights).
    """
    if logits.shape[:2] != labels.shape or labels.shape != attention_mask.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} must share (B, T); strip soft-prompt positions first"
        )
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -log_probs.gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return weighted_mean_nll(nll, labels, attention_mask, answer_start, pre_answer_weight)


def weighted_mean_nll(
    nll: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor,
    answer_start: torch.Tensor,
    pre_answer_weight: float = 0.01,
) -> torch.Tensor:
    """``weighted_lm_loss`` from the (B, T − 1) token NLLs ``nll[b, t − 1]`` of the targets
    ``labels[b, t]`` (as ``training.chunked.token_nll`` computes them without full logits)."""
    if nll.shape != (labels.shape[0], labels.shape[1] - 1) or labels.shape != attention_mask.shape:
        raise ValueError(f"nll {tuple(nll.shape)} must be (B, T - 1) for labels {tuple(labels.shape)} "
                         f"and attention_mask {tuple(attention_mask.shape)}")
    targets = labels[:, 1:]
    real = (attention_mask[:, 1:] != 0) & (targets != IGNORE_INDEX)
    positions = torch.arange(1, labels.shape[1], device=labels.device).unsqueeze(0)
    start = torch.as_tensor(answer_start, device=labels.device).long().unsqueeze(1)
    weights = torch.where(positions < start, pre_answer_weight, 1.0)
    total = (nll * weights * real).sum(dim=1)
    return total / real.sum(dim=1).clamp(min=1)


def answer_classification_loss(answer_logits_yes_no: torch.Tensor, is_member: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the (No, Yes) logit pair; the target is Yes (1) for members."""
    target = _as_bool(is_member).to(answer_logits_yes_no.device).long()
    return F.cross_entropy(answer_logits_yes_no.float(), target)


def log_one_minus_prob(scores: torch.Tensor, token_id: int) -> torch.Tensor:
    """``log(1 − p[token_id])`` per row, with p = softmax(scores) over the full vocabulary.

    Computed as logsumexp over the other tokens minus logsumexp over all tokens, which is exact
    for log-probabilities and raw logits alike, stays finite when p → 1 and keeps a gradient
    there (unlike clamping ``log1p(−exp(log p))``). Floored at −1e4.
    """
    scores = scores.float()
    others = scores.clone()
    others[:, token_id] = float("-inf")
    result = torch.logsumexp(others, dim=-1) - torch.logsumexp(scores, dim=-1)
    return result.clamp(min=_MIN_LOG)


def error_loss(
    answer_log_probs_full_vocab: torch.Tensor, yes_id: int, no_id: int, is_member: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of ``−log(1 − p(No))`` for members and ``−log(1 − p(Yes))`` otherwise.

    ``answer_log_probs_full_vocab`` is (B, V): log-probabilities (or logits, the result is the
    same) at the answer position. Each example contributes its one term; the mean is over all B
    examples (so with B/2 of each class it is half the sum of the two class means).
    """
    member = _as_bool(is_member).to(answer_log_probs_full_vocab.device)
    not_no = log_one_minus_prob(answer_log_probs_full_vocab, no_id)
    not_yes = log_one_minus_prob(answer_log_probs_full_vocab, yes_id)
    return -torch.where(member, not_no, not_yes).mean()


def _class_balanced_mean(values: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """Mean of the member mean and the non-member mean (of the classes present)."""
    means = [values[mask].mean() for mask in (member, ~member) if bool(mask.any())]
    return torch.stack(means).mean()


def hybrid_aligned_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    answer_start: torch.Tensor,
    is_member: torch.Tensor,
    yes_id: int,
    no_id: int,
    lm_weight: float = 1.0,
    classification_weight: float = 1.0,
    error_weight: float = 1.0,
    pre_answer_weight: float = 0.01,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Pipeline A's loss: weighted LM + (No, Yes) classification + error terms.

    ``logits`` (B, T, V) aligned with ``input_ids`` (prompt + answer), ``answer_start`` as in the
    module docstring. The LM term is the mean over members and the mean over non-members,
    averaged. Returns the total (a tensor with gradient) and the parts as floats for logging:
    ``lm``, ``classification``, ``error``, ``total``.
    """
    per_sequence = weighted_lm_loss(logits, input_ids, attention_mask, answer_start, pre_answer_weight)
    return aligned_loss_from_parts(per_sequence, answer_logits(logits, answer_start), is_member, yes_id,
                                   no_id, lm_weight, classification_weight, error_weight)


def aligned_loss_from_parts(
    per_sequence: torch.Tensor,
    at_answer: torch.Tensor,
    is_member: torch.Tensor,
    yes_id: int,
    no_id: int,
    lm_weight: float = 1.0,
    classification_weight: float = 1.0,
    error_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``hybrid_aligned_loss`` from its two inputs: the (B,) weighted LM losses and the (B, V)
    logits at the answer positions (what the pipeline computes without the full logits)."""
    member = _as_bool(is_member).to(per_sequence.device)
    lm = _class_balanced_mean(per_sequence, member)
    at_answer = at_answer.float()
    classification = answer_classification_loss(yes_no_logits(at_answer, yes_id, no_id), member)
    error = error_loss(F.log_softmax(at_answer, dim=-1), yes_id, no_id, member)
    total = lm_weight * lm + classification_weight * classification + error_weight * error
    parts = {"lm": lm.item(), "classification": classification.item(), "error": error.item()}
    parts["total"] = total.item()
    return total, parts


# ---------------------------------------------------------------- pipeline B (base models)


def contrastive_membership_loss(
    losses: torch.Tensor, is_member: torch.Tensor, temperature: float = 1.0, distance_scale: float = 10.0
) -> torch.Tensor:
    """Supervised contrastive loss on the scalar per-text losses ``z`` (shape (N,)).

    ``s_ij = exp(−|z_i − z_j| / distance_scale) / temperature`` (``s_ii`` excluded); for each i,
    ``−log(Σ_{j same class, j≠i} e^{s_ij} / Σ_{j≠i} e^{s_ij})``, averaged over i. Needs at least
    two texts of each class.
    """
    z = losses.float().reshape(-1)
    member = _as_bool(is_member).to(z.device).reshape(-1)
    _check_two_classes(member, 2)
    sim = torch.exp(-(z.unsqueeze(0) - z.unsqueeze(1)).abs() / distance_scale) / temperature
    eye = torch.eye(z.numel(), dtype=torch.bool, device=z.device)
    same = (member.unsqueeze(0) == member.unsqueeze(1)) & ~eye
    minus_inf = torch.full_like(sim, float("-inf"))
    numerator = torch.logsumexp(torch.where(same, sim, minus_inf), dim=1)
    denominator = torch.logsumexp(torch.where(eye, minus_inf, sim), dim=1)
    return (denominator - numerator).mean()


def hinge_loss(losses: torch.Tensor, is_member: torch.Tensor) -> torch.Tensor:
    """``ReLU(mean ℓ(members) − mean ℓ(non-members))``: zero once members have the lower loss."""
    z = losses.float().reshape(-1)
    member = _as_bool(is_member).to(z.device).reshape(-1)
    _check_two_classes(member, 1)
    return F.relu(z[member].mean() - z[~member].mean())


def base_pipeline_loss(
    losses: torch.Tensor,
    is_member: torch.Tensor,
    contrastive_weight: float = 1.0,
    hinge_weight: float = 1.0,
    temperature: float = 1.0,
    distance_scale: float = 10.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Pipeline B's loss: contrastive + hinge. Returns the total and float parts for logging."""
    contrastive = contrastive_membership_loss(losses, is_member, temperature, distance_scale)
    hinge = hinge_loss(losses, is_member)
    total = contrastive_weight * contrastive + hinge_weight * hinge
    parts = {"contrastive": contrastive.item(), "hinge": hinge.item(), "total": total.item()}
    return total, parts


# ---------------------------------------------------------------- safeguard 1 (defence)


def chance_contrastive_loss(batch_per_class: int) -> float:
    """The contrastive loss when all similarities are equal: ``−ln((B−1)/(2B−1))`` (0.762 at B=8)."""
    if batch_per_class < 2:
        raise ValueError(f"batch_per_class must be at least 2, got {batch_per_class}")
    return -math.log((batch_per_class - 1) / (2 * batch_per_class - 1))


def chance_contrastive_loss_for(is_member: torch.Tensor) -> float:
    """Chance value for any class sizes: mean over i of ``−ln((n_class(i) − 1)/(N − 1))``.

    Equals ``chance_contrastive_loss(B)`` for B members and B non-members.
    """
    member = _as_bool(is_member).reshape(-1)
    _check_two_classes(member, 2)
    n, n_members = member.numel(), int(member.sum())
    n_non = n - n_members
    per_member = -math.log((n_members - 1) / (n - 1))
    per_non = -math.log((n_non - 1) / (n - 1))
    return (n_members * per_member + n_non * per_non) / n


def defensive_loss(
    losses: torch.Tensor, is_member: torch.Tensor, temperature: float = 1.0, distance_scale: float = 10.0
) -> torch.Tensor:
    """``|L_ctr − L_chance|``: pushes members and non-members to be indistinguishable by loss.

    ``L_chance`` comes from the batch's class sizes (``−ln((B−1)/(2B−1))`` when balanced).
    """
    contrastive = contrastive_membership_loss(losses, is_member, temperature, distance_scale)
    return (contrastive - chance_contrastive_loss_for(is_member)).abs()
