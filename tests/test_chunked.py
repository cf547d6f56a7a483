"""Chunked next-token NLL (training.chunked): the numbers and gradients of the full-logits
computation, without the full logits; the output layer bypassed only inside the block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mia_tuner.training import chunked
from mia_tuner.training import losses as L

from helpers import make_tiny_model

VOCAB = 50


def full_token_nll(model, ids, mask):
    """The reference: every position's logits at once (capped as Gemma's forward caps them;
    the tiny Llama's forward does not), log-softmax, gather."""
    logits = model(input_ids=ids, attention_mask=mask).logits
    cap = model.config.final_logit_softcapping
    if cap:
        logits = torch.tanh(logits / cap) * cap
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return -log_probs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def chunked_token_nll(model, ids, mask, chunk):
    with chunked.hidden_states_out(model) as head:
        hidden = model(input_ids=ids, attention_mask=mask).logits
    return chunked.token_nll(hidden, head, ids, chunk=chunk)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # a padded row
    return ids, mask


@pytest.mark.parametrize("softcap", [None, 0.5])
@pytest.mark.parametrize("frozen_head", [True, False])  # gradient from the forward / checkpointing
@pytest.mark.parametrize("chunk", [1, 3, 4, 10, 64])  # one position, ragged last chunk, one chunk
def test_chunked_nll_and_its_gradient_equal_the_full_computation(batch, chunk, frozen_head, softcap):
    ids, mask = batch
    start = torch.tensor([1, 1, 1])
    model = make_tiny_model(VOCAB)
    model.config.final_logit_softcapping = softcap
    model.lm_head.weight.requires_grad_(not frozen_head)
    full = L.weighted_mean_nll(full_token_nll(model, ids, mask), ids, mask, start, 1.0)
    full.sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    got = L.weighted_mean_nll(chunked_token_nll(model, ids, mask, chunk), ids, mask, start, 1.0)
    got.sum().backward()
    torch.testing.assert_close(got, full, rtol=0, atol=1e-6)
    assert len(expected) == len([p for p in model.parameters() if p.requires_grad])
    for name, param in model.named_parameters():
        if name in expected:
            torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)


def test_the_output_layer_is_restored_after_the_block(batch):
    ids, mask = batch
    model = make_tiny_model(VOCAB)
    before = model(input_ids=ids, attention_mask=mask).logits
    with chunked.hidden_states_out(model):
        inside = model(input_ids=ids, attention_mask=mask).logits
    after = model(input_ids=ids, attention_mask=mask).logits
    assert inside.shape[-1] == model.config.hidden_size and before.shape[-1] == VOCAB
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_soft_capping_is_applied_like_the_model_does():
    model = make_tiny_model(VOCAB)
    model.config.final_logit_softcapping = 0.5
    head = chunked.OutputHead(model)
    hidden = torch.randn(2, 4, model.config.hidden_size)
    raw = model.lm_head(hidden)
    torch.testing.assert_close(head.logits(hidden), torch.tanh(raw / 0.5) * 0.5)


def test_misaligned_hidden_states_are_refused(batch):
    ids, _ = batch
    model = make_tiny_model(VOCAB)
    with pytest.raises(ValueError, match="must share"):
        chunked.token_nll(torch.zeros(3, 5, model.config.hidden_size), chunked.OutputHead(model), ids)


def test_a_model_whose_logits_the_head_cannot_rebuild_is_refused(tiny_model_dir):
    """A model transforming its logits in a way OutputHead does not know (here: a capping the
    tiny Llama's forward does not apply) is refused at its first batch, not trained silently."""
    from mia_tuner.config import ModelConfig
    from mia_tuner.errors import ModelError
    from mia_tuner.models import load_model
    from mia_tuner.tuner.config import TunerConfig
    from mia_tuner.tuner.peft_setup import wrap_model
    from mia_tuner.tuner.pipelines import make_pipeline

    loaded = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu"))
    config = TunerConfig(mode="base", num_virtual_tokens=2)
    pipeline = make_pipeline(loaded, config)
    model = wrap_model(loaded.model, loaded.tokenizer, config)
    batch = pipeline.encode(["The cat sat.", "A dog ran.", "Birds sing.", "Rain falls."], [1, 0, 1, 0])
    pipeline.loss(model, batch)  # the head matches: fine
    loaded.model.config.final_logit_softcapping = 0.5
    other = make_pipeline(loaded, config)
    with pytest.raises(ModelError, match="transforms its logits"):
        other.loss(model, batch)
