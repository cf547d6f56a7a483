"""MIA-Tuner's two pipelines: what a training batch holds, its loss, and the test-time score.

* ``AlignedPipeline`` (pipeline A, chat models): the membership question in the model's chat
  template, answered Yes/No; hybrid loss; score ``p(Yes) / (p(Yes) + p(No))`` at the answer
  position.
* ``BasePipeline`` (pipeline B, base models): the raw text; per-text mean NLL ℓ(x) under the
  soft prompt; contrastive + hinge loss; score ``−ℓ(x)``.

Both pipelines' scores are higher for a more likely member. Texts longer than
``config.max_tokens`` tokens are truncated (aligned: the text inside the question is cut to
that many tokens; base: the token ids, special tokens included). Batches are right-padded.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mia_tuner.errors import DataError, ModelError
from mia_tuner.models.batching import length_batches, pad_batch
from mia_tuner.training import chunked, losses
from mia_tuner.tuner import prompts
from mia_tuner.tuner.peft_setup import forward_logits, shared_prefix_logits

log = logging.getLogger(__name__)


def model_device(model) -> torch.device:
    """The device of the model's first parameter (where inputs go)."""
    return next(model.parameters()).device


class Pipeline:
    """Common part: tokenizer, config, encode cache and batched scoring."""

    mode = ""

    def __init__(self, tokenizer, config):
        self.tokenizer = tokenizer
        self.config = config
        self._memo: dict = {}
        self._head_checked: set[int] = set()  # models whose OutputHead matched their logits

    def encode(self, texts, labels) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, model, batch: dict, sync=None):  # pragma: no cover - abstract
        raise NotImplementedError

    template_source = "unused"  # set by make_pipeline: tokenizer | fallback:<name> | unused

    def describe(self) -> dict:
        """What a detector file records about this pipeline."""
        return {"mode": self.mode, "template_source": self.template_source}

    def _score_batch(self, model, sequences: list[list[int]]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _scoring_ids(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, model, texts, batch_size: int | None = None) -> np.ndarray:
        """One score per text (higher = member), in the order of ``texts``."""
        texts = list(texts)
        sequences = [self._scoring_ids(t) for t in texts]
        scores = np.empty(len(texts), dtype=np.float64)
        batches = length_batches([len(s) for s in sequences], batch_size or self.config.batch_size)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                # a validation pass of a large model takes minutes: show it
                for batch in tqdm(batches, desc="scoring texts", unit="batch", leave=False,
                                  disable=len(batches) < 2):
                    scores[batch] = self._score_batch(model, [sequences[i] for i in batch])
        finally:
            model.train(was_training)
        return scores

    def logits(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, V) logits aligned with ``input_ids``; the shared prefix run once when asked."""
        if self.config.share_prefix and not self.config.gradient_checkpointing:
            return shared_prefix_logits(model, input_ids, attention_mask)
        return forward_logits(model, input_ids, attention_mask)

    def hidden(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, forward=None):
        """(last hidden states (B, T, H) aligned with ``input_ids``, the ``OutputHead`` mapping
        them to logits): ``forward`` (default ``self.logits``) run with the output layer bypassed,
        so that no (B, T, V) logits are made (training.chunked)."""
        forward = forward or self.logits
        with chunked.hidden_states_out(model) as head:
            hidden = forward(model, input_ids, attention_mask)
        if id(model) not in self._head_checked:
            self._check_head(model, forward, input_ids[:1], attention_mask[:1], head, hidden[:1, -1])
            self._head_checked.add(id(model))
        return hidden, head

    @staticmethod
    @torch.no_grad()
    def _check_head(model, forward, input_ids, attention_mask, head, hidden_last) -> None:
        """Once per model: the output head rebuilt from the hidden states must give the model's
        own logits (a model that transforms its logits in a way ``OutputHead`` does not know
        would otherwise be trained and scored on wrong numbers, silently)."""
        expected = forward(model, input_ids, attention_mask)[0, -1].float()
        got = head.logits(hidden_last.detach())[0]
        if not torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()) + 1e-4):
            raise ModelError(f"{type(chunked.base_model(model)).__name__} transforms its logits after the "
                             "output layer in a way the chunked losses do not reproduce; this model is "
                             "not supported for training yet")

    def _pad(self, sequences: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = pad_batch(sequences, self.tokenizer.pad_token_id)
        return ids.to(device), mask.to(device)


class AlignedPipeline(Pipeline):
    """Pipeline A: the membership question in the chat template, trained to answer Yes/No."""

    mode = "aligned"

    def __init__(self, tokenizer, config):
        super().__init__(tokenizer, config)
        prompts.require_template(tokenizer)
        self.template_source = "tokenizer"
        self.yes_id, self.no_id = prompts.resolve_answer_tokens(
            tokenizer, system_prompt=config.system_prompt)

    def describe(self) -> dict:
        return {"mode": self.mode, "template_source": self.template_source,
                "yes_id": self.yes_id, "no_id": self.no_id,
                "prompt_format": prompts.describe_prompt_format(self.tokenizer, self.config.system_prompt)}

    def truncate(self, text: str) -> str:
        """``text`` cut to ``config.max_tokens`` tokens (unchanged when shorter)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.config.max_tokens:
            return text
        return self.tokenizer.decode(ids[: self.config.max_tokens])

    def example(self, text: str, is_member: bool) -> tuple[list[int], int]:
        """(ids, answer_start) of one training example, memoised."""
        key = (text, bool(is_member))
        if key not in self._memo:
            ids, start = prompts.training_example_ids(
                self.tokenizer, self.truncate(text), bool(is_member),
                self.config.system_prompt, self.config.long_answer)
            expected = self.yes_id if is_member else self.no_id
            if ids[start] != expected:
                raise ModelError(f"the answer token of a training example is {ids[start]}, "
                                 f"not the resolved class token {expected}")
            self._memo[key] = (ids, start)
        return self._memo[key]

    def encode(self, texts, labels) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask (right padded), answer_start, is_member."""
        examples = [self.example(t, y) for t, y in zip(texts, labels)]
        input_ids, attention_mask = pad_batch([ids for ids, _ in examples], self.tokenizer.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "answer_start": torch.tensor([s for _, s in examples], dtype=torch.long),
                "is_member": torch.tensor([int(y) for y in labels], dtype=torch.long)}

    def loss(self, model, batch: dict, sync=None):
        """The hybrid loss (a mean over the batch's examples: exact under data parallelism
        when every process holds as many members as non-members)."""
        c = self.config
        ids, mask, start = batch["input_ids"], batch["attention_mask"], batch["answer_start"]
        hidden, head = self.hidden(model, ids, mask)
        nll = chunked.token_nll(hidden, head, ids)
        per_sequence = losses.weighted_mean_nll(nll, ids, mask, start, c.pre_answer_weight)
        at_answer = head.logits(losses.answer_logits(hidden, start))
        total, parts = losses.aligned_loss_from_parts(
            per_sequence, at_answer, batch["is_member"], self.yes_id, self.no_id, lm_weight=c.lm_weight,
            classification_weight=0.0 if c.full_vocab_classification else c.classification_weight,
            error_weight=c.error_weight)
        if c.full_vocab_classification:
            target = torch.where(batch["is_member"].to(at_answer.device) != 0, self.yes_id, self.no_id)
            classification = F.cross_entropy(at_answer, target)
            total = total + c.classification_weight * classification
            parts.update(classification=classification.item(), total=total.item())
        return total, parts

    def _scoring_ids(self, text: str) -> list[int]:
        return prompts.scoring_prompt_ids(self.tokenizer, self.truncate(text), self.config.system_prompt)

    def answer_margins(self, model, sequences: list[list[int]]) -> torch.Tensor:
        """logit(Yes) − logit(No) at the last position of each prompt (fp32, differentiable)."""
        ids, mask = self._pad(sequences, model_device(model))
        return self.padded_answer_margins(model, ids, mask)

    def padded_answer_margins(self, model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``answer_margins`` of right-padded prompts (each prompt ends at its mask's end)."""
        hidden, head = self.hidden(model, ids, mask)
        lengths = mask.sum(dim=1).to(hidden.device)
        pair = losses.yes_no_logits(head.logits(losses.answer_logits(hidden, lengths)), self.yes_id, self.no_id)
        return pair[:, 1] - pair[:, 0]

    def _score_batch(self, model, sequences: list[list[int]]) -> np.ndarray:
        """p(Yes) / (p(Yes) + p(No)) at each prompt's last position (in float64)."""
        return torch.sigmoid(self.answer_margins(model, sequences).double()).cpu().numpy()


class BasePipeline(Pipeline):
    """Pipeline B: the raw text; the soft prompt is trained so members get the lower loss.

    ℓ(x) is the mean NLL of the text's tokens after the first (the same targets as the Loss
    baseline), each predicted from the soft prompt and the tokens before it. The calibrated
    variant trains and scores ℓ(x) − ℓ₀(x), ℓ₀ the loss without the adapter.
    """

    mode = "base"

    def __init__(self, tokenizer, config):
        super().__init__(tokenizer, config)
        self._plain: dict[tuple, float] = {}

    def token_ids(self, text: str) -> list[int]:
        """The text's ids with the tokenizer's special tokens, truncated to max_tokens."""
        if text not in self._memo:
            ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])[: self.config.max_tokens]
            if len(ids) < 2:
                raise DataError(f"a text has fewer than 2 tokens, so no token can be scored: {text!r}")
            self._memo[text] = ids
        return self._memo[text]

    def encode(self, texts, labels) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask (right padded), is_member."""
        input_ids, attention_mask = pad_batch([self.token_ids(t) for t in texts], self.tokenizer.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "is_member": torch.tensor([int(y) for y in labels], dtype=torch.long)}

    def text_losses(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The per-row statistic the pipeline trains and scores: ℓ(x), or with
        ``base_score="calibrated"`` ℓ(x) minus the loss of the model without the adapter."""
        z = self._mean_nll(model, input_ids, attention_mask)
        if self.config.base_score == "calibrated":
            z = z - self._plain_losses(model, input_ids, attention_mask).to(z.device, z.dtype)
        return z

    def _mean_nll(self, model, input_ids, attention_mask, forward=None) -> torch.Tensor:
        """ℓ(x) per row: mean NLL over the real target tokens (positions 1 .. len-1)."""
        hidden, head = self.hidden(model, input_ids, attention_mask, forward)
        return mean_nll_from_hidden(hidden, head, input_ids, attention_mask)

    def _plain_losses(self, model, input_ids, attention_mask) -> torch.Tensor:
        """ℓ(x) of the model without its adapter (constant in training: memoised per text)."""
        rows = [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(input_ids, attention_mask)]
        missing = [i for i, key in enumerate(rows) if key not in self._plain]
        if missing:
            peft_model = getattr(model, "module", model)  # under DDP
            ids, mask = input_ids[missing], attention_mask[missing]
            with torch.no_grad(), peft_model.disable_adapter():
                values = self._mean_nll(peft_model, ids, mask, forward=forward_logits)
            self._plain.update(zip((rows[i] for i in missing), values.float().tolist()))
        return torch.tensor([self._plain[key] for key in rows], dtype=torch.float64)

    def loss(self, model, batch: dict, sync=None):
        """Contrastive + hinge on the ℓ(x) of the whole batch (gathered over processes)."""
        c = self.config
        z = self.text_losses(model, batch["input_ids"], batch["attention_mask"])
        member = batch["is_member"].to(z.device)
        if sync is not None:
            z, member = sync.gather(z), sync.gather(member)
        total, parts = losses.base_pipeline_loss(
            z, member, contrastive_weight=c.contrastive_weight, hinge_weight=c.hinge_weight,
            temperature=c.temperature, distance_scale=c.distance_scale)
        parts["member_nll"] = z[member != 0].mean().item()
        parts["nonmember_nll"] = z[member == 0].mean().item()
        if sync is not None:
            total = sync.global_loss(total)
        return total, parts

    def _scoring_ids(self, text: str) -> list[int]:
        return self.token_ids(text)

    def _score_batch(self, model, sequences: list[list[int]]) -> np.ndarray:
        ids, mask = self._pad(sequences, model_device(model))
        return (-self.text_losses(model, ids, mask)).double().cpu().numpy()


def mean_nll_from_hidden(hidden, head, input_ids, attention_mask) -> torch.Tensor:
    """ℓ(x) per row from the last hidden states: mean NLL of the real targets 1 .. len-1."""
    nll = chunked.token_nll(hidden, head, input_ids)
    first = torch.ones(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
    return losses.weighted_mean_nll(nll, input_ids, attention_mask, first, pre_answer_weight=1.0)


def prepare_tokenizer(tokenizer, config) -> str:
    """Apply the fallback chat template when asked and the tokenizer has none.

    Returns where the template comes from: "tokenizer", "fallback:<name>" or "none".
    """
    has_own = bool(getattr(tokenizer, "chat_template", None))
    if config.chat_template and not has_own:
        prompts.apply_fallback_template(tokenizer, config.chat_template)
        return f"fallback:{config.chat_template}"
    if config.chat_template and has_own:
        log.info("the tokenizer has its own chat template; the fallback %r is not used", config.chat_template)
    return "tokenizer" if has_own else "none"


def make_pipeline(loaded, config) -> Pipeline:
    """The pipeline for ``config.mode`` (auto: aligned iff a chat template is available).

    Gives ``loaded.tokenizer`` the fallback template ``config.chat_template`` when it has none.
    ModelError when aligned is asked for and no template is available.
    """
    mode = config.resolve_mode(loaded.tokenizer)
    if mode == "base":
        pipeline: Pipeline = BasePipeline(loaded.tokenizer, config)
        pipeline.template_source = "unused"
        return pipeline
    source = prepare_tokenizer(loaded.tokenizer, config)
    pipeline = AlignedPipeline(loaded.tokenizer, config)
    pipeline.template_source = source
    return pipeline
