"""FSD, Fine-tuned Score Deviation (Zhang et al., arXiv 2410.10880): how much a text's
likelihood rises when the target is fine-tuned on a few texts known to be non-members.

Fine-tuning on non-members of the texts' own domain raises the likelihood of unseen texts
(the non-members) more than that of texts the model has already learnt (the members), so a
smaller rise means member. The fine-tuned copy of the target (``FINE_TUNED_TARGET``) is built
from the training part's non-members, its epoch chosen on validation texts (``references``);
no reference model is needed.
"""

from __future__ import annotations

from .base import FINE_TUNED_TARGET, Method, ScoringContext, register


@register
class FSD(Method):
    """Mean log-likelihood after fine-tuning on non-members minus before: lower for members."""

    name = "fsd"
    higher_is_member = False
    uses_labels = True
    fine_tuned_role = FINE_TUNED_TARGET

    def cache_settings(self, ctx: ScoringContext) -> dict:
        return {"max_tokens": ctx.target.max_tokens, "fine_tuned": ctx.stats(FINE_TUNED_TARGET).loaded.fingerprint}

    def raw_statistic(self, texts, ctx):
        return ctx.stats(FINE_TUNED_TARGET).mean_logprobs(texts) - ctx.target.mean_logprobs(texts)
