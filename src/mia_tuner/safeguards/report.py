"""What `defend` reports: every attack's AUROC and TPR@1%FPR before and after a defence, on the
held-out test texts, on the defender's own training texts (seen) and, on a controlled set, on
the model before injection (the perfect defence's floor); the utility lines under the table."""

from __future__ import annotations

from mia_tuner.metrics import compute_metrics
from mia_tuner.safeguards.utility import Utility

DASH = "—"


def metric_row(method: str, labels, before, after, adaptive: bool) -> dict:
    """AUROC (with its interval) and TPR@1%FPR of ``method``'s scores before and after."""
    b, a = compute_metrics(labels, before), compute_metrics(labels, after)
    return {"method": method, "adaptive": adaptive,
            "auroc_before": b.auroc, "auroc_before_low": b.auroc_low, "auroc_before_high": b.auroc_high,
            "auroc_after": a.auroc, "auroc_after_low": a.auroc_low, "auroc_after_high": a.auroc_high,
            "tpr_at_1_fpr_before": b.tpr_at_fpr[0.01], "tpr_at_1_fpr_after": a.tpr_at_fpr[0.01]}


def _with_ci(row: dict, when: str) -> str:
    return (f"{row[f'auroc_{when}']:.3f} [{row[f'auroc_{when}_low']:.3f}, "
            f"{row[f'auroc_{when}_high']:.3f}]")


def beside(rows: list[dict], seen_rows: list[dict] | None, floor_rows: list[dict] | None) -> list[dict]:
    """``rows`` with, for each non-adaptive attack, its AUROC before and after on the defender's
    own texts (``seen_before``, ``seen_after``) and on the model before injection (``floor``)."""
    seen = {r["method"]: r for r in seen_rows or []}
    floor = {r["method"]: r for r in floor_rows or []}
    out = []
    for row in rows:
        own = None if row["adaptive"] else row["method"]
        extra = {}
        if own in seen:
            extra.update(seen_before=seen[own]["auroc_before"], seen_after=seen[own]["auroc_after"])
        if own in floor:
            extra["floor"] = floor[own]["auroc_after"]
        out.append({**row, **extra})
    return out


def seen_cell(row: dict) -> str:
    return f"{row['seen_before']:.3f} → {row['seen_after']:.3f}" if "seen_before" in row else DASH


def floor_cell(row: dict) -> str:
    return f"{row['floor']:.3f}" if "floor" in row else DASH


def report_table(rows: list[dict], utility: Utility, seen_rows: list[dict] | None = None,
                 floor=None) -> str:
    """The before/after table a person reads: a column for the defender's own texts where
    ``seen_rows`` are given, one for the perfect defence where ``floor`` is (safeguards.floor),
    the utility lines under it."""
    headers = ["attack", "AUROC before", "AUROC after", "TPR@1%FPR before", "after"]
    headers += ["defender's own texts, before → after"] if seen_rows is not None else []
    headers += [f"perfect defence ({floor.model} released)"] if floor else []
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in beside(rows, seen_rows, floor.rows if floor else None):
        cells = [r["method"] + (" (adaptive)" if r["adaptive"] else ""), _with_ci(r, "before"), _with_ci(r, "after"),
                 f"{r['tpr_at_1_fpr_before']:.3f}", f"{r['tpr_at_1_fpr_after']:.3f}"]
        cells += [seen_cell(r)] if seen_rows is not None else []
        cells += [floor_cell(r)] if floor else []
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", utility_line("Perplexity on general text", utility)]
    if utility.greedy_agreement is not None:
        lines.append(f"Identical greedy answers to {utility.n_prompts} ordinary prompts: "
                     f"{100 * utility.greedy_agreement:.0f}%")
    if utility.mmlu_before is not None:
        lines.append(f"Multiple-choice accuracy ({utility.n_questions} questions): {utility.mmlu_before:.3f} -> "
                     f"{utility.mmlu_after:.3f}")
    if floor:
        lines.append(utility_line(f"The perfect defence (releasing {floor.model}, the model before injection): "
                                  "perplexity", floor.utility))
    return "\n".join(lines)


def utility_line(what: str, u: Utility) -> str:
    return (f"{what}: {u.ppl_before:.2f} -> {u.ppl_after:.2f} ({100 * u.ppl_change:+.1f}%); "
            f"mean KL {u.kl:.4f} nats/token over {u.n_tokens} positions")
