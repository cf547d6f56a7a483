"""Scores that compare the text's likelihood with another likelihood: of its lowercased
version (Lowercase) or under a reference model (Ref)."""

from __future__ import annotations


from .base import Method, ReferenceMethod, ScoringContext, register


@register
class Lowercase(Method):
    """Ratio of the mean log-likelihoods of the lowercased text and the text (Carlini et al.).

    Both are negative, so the ratio is NLL(lower) / NLL(text): large when the model finds the
    exact casing of the text unusually likely, as it does for memorised text.
    """

    name = "lowercase"
    higher_is_member = True
    fusable = True

    def cache_settings(self, ctx: ScoringContext) -> dict:
        return {"max_tokens": ctx.target.max_tokens, "lowercased": "scored-text"}

    def raw_statistic(self, texts, ctx):
        original = ctx.target.mean_logprobs(texts)
        # a truncated text is lowercased as scored, so both likelihoods cover the same words
        lowered = [t.lower() for t in ctx.target.seen_texts(texts)]
        return ctx.target.mean_logprobs(lowered) / original  # unchanged texts: no pass


@register
class Ref(ReferenceMethod):
    """Target NLL minus reference-model NLL of the text (Carlini et al.): lower for members."""

    name = "ref"
    higher_is_member = False
    fusable = True

    def cache_settings(self, ctx: ScoringContext) -> dict:
        return {"max_tokens": ctx.target.max_tokens, **self.reference_settings(ctx),
                "reference_reads": "scored-text"}

    def raw_statistic(self, texts, ctx):
        # the reference reads the text as the target scored it (their tokenizers may differ)
        seen = ctx.target.seen_texts(texts)
        return self.reference(ctx).mean_logprobs(seen) - ctx.target.mean_logprobs(texts)
