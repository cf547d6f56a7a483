"""What a defence is trained on: a batch of members and non-members, and the defensive loss.

The defence is trained with the shared ``Trainer`` on balanced batches, like MIA-Tuner. Per
batch, under the defended model:

* ``|L_ctr(ℓ) − L_chance|`` on the per-text losses ℓ(x) (the paper's safeguard against
  score-based attacks; ``L_chance`` from the batch's own class sizes), or with
  ``member_term="shift"`` the mean over the batch's members of ``|ℓ(x) − ℓ₀(x) − δ|``: each
  member's loss raised from its original value ℓ₀(x) by δ, the members' advantage measured on
  the defender's training texts before training (mean ℓ₀ of non-members − of members);
* ``anchor_weight`` × the mean KL divergence from the original model's next-token
  distributions over the batch's non-member tokens (ours: the defence may move members, not
  the model's behaviour on text it was not trained on);
* against MIA-Tuner, also ``answer_weight`` × ``|L_ctr(m) − L_chance|`` on the membership
  question's answer margin m(x) = logit(Yes) − logit(No) (same answers for both classes), for
  a chat model. A base model (no chat template) is attacked by MIA-Tuner's base pipeline,
  which reads the per-text losses: there the first term is the whole defence.

The hidden states of one defended pass serve both the losses and the KL term (no second pass
of the defended model); the original model runs once on the non-members, without gradient.
"""

from __future__ import annotations


import numpy as np
import torch

from mia_tuner.models.batching import pad_batch
from mia_tuner.training import chunked, losses
from mia_tuner.tuner.config import TunerConfig
from mia_tuner.tuner.peft_setup import forward_logits
from mia_tuner.tuner.pipelines import AlignedPipeline, BasePipeline, mean_nll_from_hidden, model_device
from mia_tuner.safeguards.config import DefenceConfig
from mia_tuner.safeguards.defended import undefended
from mia_tuner.safeguards.utility import perplexity_and_kl


def _gathered(sync, local: torch.Tensor) -> torch.Tensor:
    """The whole batch's values (only this process's slice carries a gradient)."""
    return local if sync is None else sync.gather(local)


def answers_membership_question(tokenizer) -> bool:
    """Whether MIA-Tuner attacks this model through its answer to the membership question
    (the aligned pipeline: the same rule as MIA-Tuner's ``mode="auto"``, a chat template)."""
    return TunerConfig(mode="auto").resolve_mode(tokenizer) == "aligned"


class DefencePipeline(BasePipeline):
    """Encodes batches and computes the defensive loss (see the module docstring)."""

    mode = "defence"

    def __init__(self, tokenizer, config: DefenceConfig):
        view = TunerConfig(mode="base", max_tokens=config.max_tokens, batch_size=config.batch_size,
                           share_prefix=False, system_prompt=config.system_prompt)
        super().__init__(tokenizer, view)
        self.defence = config
        self.member_shift: float | None = None  # δ of member_term="shift" (measure_member_shift)
        self._original: dict[tuple, float] = {}  # ℓ₀ by token ids
        asks = config.against == "mia-tuner" and answers_membership_question(tokenizer)
        self.aligned = AlignedPipeline(tokenizer, view) if asks else None

    def encode(self, texts, labels) -> dict[str, torch.Tensor]:
        batch = super().encode(texts, labels)
        if self.aligned is not None:
            questions = [self.aligned._scoring_ids(t) for t in texts]
            ids, mask = pad_batch(questions, self.tokenizer.pad_token_id)
            batch.update(question_ids=ids, question_mask=mask)
        return batch

    def loss(self, model, batch: dict, sync=None):
        """The defensive loss of the batch. Under several processes (``sync``: the trainer's
        BatchSync) each holds a slice of the batch: the per-text values are gathered so the
        contrastive terms see the whole batch, the anchor's token mean is taken over every
        process's tokens, and the total is scaled so that DDP's averaged gradient equals the
        one-process gradient."""
        c = self.defence
        ids, mask = batch["input_ids"], batch["attention_mask"]
        member = batch["is_member"]
        world = 1 if sync is None else sync.world_size
        hidden, head = self.hidden(model, ids, mask, forward=forward_logits)
        local = mean_nll_from_hidden(hidden, head, ids, mask)
        z, all_member = _gathered(sync, local), _gathered(sync, member)
        contrastive = losses.defensive_loss(z, all_member, c.temperature, c.distance_scale)
        parts = {"defence": contrastive.item(), "member_nll": z[all_member != 0].mean().item(),
                 "nonmember_nll": z[all_member == 0].mean().item()}
        terms = []  # (part's name, weight, this process's term): the loss and the logged total
        if c.member_term == "shift":
            shift = self.shift_sum(model, local, ids, mask, member != 0)
            shift = shift / _gathered(sync, (member != 0).sum().reshape(1)).sum().clamp(min=1)  # this slice's share
            terms.append(("shift", c.defence_weight, shift))
            parts["shift"] = shift.item() * world
        else:
            terms.append(("defence", c.defence_weight, contrastive))
        if c.anchor_weight:
            kl_sum, positions = self.anchor_kl_sum(model, hidden, head, ids[member == 0], mask[member == 0],
                                                   member == 0)
            kl = kl_sum / _gathered(sync, positions.reshape(1)).sum().clamp(min=1)  # this slice's share
            terms.append(("kl", c.anchor_weight, kl))
            parts["kl"] = kl.item() * world  # averaged over processes: the batch's mean
        if self.aligned is not None:
            margins = _gathered(sync, self._margins(model, batch))
            answer = losses.defensive_loss(margins, all_member, c.temperature, c.answer_distance_scale)
            terms.append(("answer", c.answer_weight, answer))
            parts.update(answer=answer.item(), member_margin=margins[all_member != 0].mean().item(),
                         nonmember_margin=margins[all_member == 0].mean().item())
        total = sum(weight * term for _, weight, term in terms)
        # the batch's total from its parts (a process's ``total`` holds only its share of the
        # KL and shift terms)
        parts["total"] = sum(weight * parts[name] for name, weight, _ in terms)
        return (total if sync is None else sync.global_loss(total)), parts

    def measure_member_shift(self, model, train) -> float:
        """δ: mean original loss ℓ₀ of ``train``'s non-members minus that of its members (what
        the members gain from having been trained on), kept for ``shift``."""
        values, labels = [], np.array(train.labels)
        for start in range(0, len(train.texts), self.defence.batch_size):
            texts = train.texts[start:start + self.defence.batch_size]
            ids, mask = pad_batch([self.token_ids(t) for t in texts], self.tokenizer.pad_token_id)
            values += self.original_nll(model, ids, mask).tolist()
        values = np.array(values)
        self.member_shift = float(values[labels == 0].mean() - values[labels == 1].mean())
        return self.member_shift

    def original_nll(self, model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ℓ₀ of each row under the model without its defence, memoised by token ids (it never
        changes during training)."""
        rows = [tuple(r[m.bool()].tolist()) for r, m in zip(ids, mask)]
        missing = [i for i, key in enumerate(rows) if key not in self._original]
        if missing:
            device = model_device(model)  # DDP's wrapper has the same parameters
            ids_m, mask_m = ids[missing].to(device), mask[missing].to(device)
            with torch.no_grad(), undefended(model) as original:
                hidden, head = self.hidden(original, ids_m, mask_m, forward=forward_logits)
                values = mean_nll_from_hidden(hidden, head, ids_m, mask_m)
            self._original.update(zip((rows[i] for i in missing), values.double().tolist()))
        return torch.tensor([self._original[key] for key in rows], dtype=torch.float64)

    def shift_sum(self, model, local: torch.Tensor, ids, mask, rows) -> torch.Tensor:
        """Σ over the ``rows`` (members) of |ℓ(x) − ℓ₀(x) − δ|."""
        if self.member_shift is None:
            raise RuntimeError("member_term='shift' needs measure_member_shift before training")
        original = self.original_nll(model, ids[rows], mask[rows]).to(local.device, local.dtype)
        return (local[rows] - original - self.member_shift).abs().sum()

    def anchor_kl_sum(self, model, hidden, head, ids, mask, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed KL(original ‖ defended), number of positions) over the real next-token
        positions of ``rows``."""
        with torch.no_grad(), undefended(model) as original:
            reference, _ = self.hidden(original, ids, mask, forward=forward_logits)
        kl = chunked.token_kl(hidden[rows], reference, head)
        predicts = mask.clone()
        predicts[:, :-1] = mask[:, :-1] * mask[:, 1:]  # a position counts if a real token follows
        predicts[:, -1] = 0
        return (kl * predicts).sum(), predicts.sum()

    def mean_kl(self, model, texts: list[str]) -> float:
        """Mean KL(original ‖ defended) per next-token position over ``texts`` (the utility
        report's measure, on texts the defence did not train on: checkpoint selection's check)."""

        was_training = model.training
        model.eval()
        try:
            return perplexity_and_kl(model, self.tokenizer, list(texts), self.defence.max_tokens,
                                     self.defence.batch_size)[2]
        finally:
            model.train(was_training)

    def _margins(self, model, batch) -> torch.Tensor:
        return self.aligned.padded_answer_margins(model, batch["question_ids"], batch["question_mask"])

    def score(self, model, texts, batch_size: int | None = None) -> np.ndarray:
        """Validation score of the statistic the defence hides: −ℓ(x) (against scores) or the
        membership answer's p(Yes) (against MIA-Tuner, chat model); higher = member."""
        if self.aligned is not None:
            return self.aligned.score(model, texts, batch_size)
        return super().score(model, texts, batch_size)
