"""BENCHMARKS.md's tables of the bench scripts' JSON records (bench/results/*.json): one
renderer per record file, each returning its block's body (the command that wrote the record,
its dates and machine, then the table). Reads JSON only: no model and no run folder (the
detection table is detection.py's renderer, which imports the package).
bench/check_generated.py wraps each body in its block markers.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DASH = "—"


def load(name: str):
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table; ``align`` one character per column, ``r`` for right-aligned."""
    align = align or "l" * len(headers)
    rule = "|".join("---:" if a == "r" else "---" for a in align)
    lines = ["| " + " | ".join(headers) + " |", f"|{rule}|"]
    lines += ["| " + " | ".join(DASH if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def with_ci(record: dict, key: str = "auroc", digits: int = 3) -> str:
    """``0.648 [0.59, 0.70]`` from ``key``, ``key_low`` and ``key_high``."""
    if record.get(key) is None:
        return DASH
    low, high = record.get(f"{key}_low"), record.get(f"{key}_high")
    ci = "" if low is None else f" [{low:.2f}, {high:.2f}]"
    return f"{record[key]:.{digits}f}{ci}"


def num(value, fmt: str = ".3f") -> str:
    return DASH if value is None else format(value, fmt)


def dates(records) -> str:
    """The records' dates, first to last (days only)."""
    days = sorted({str(r["date"])[:10] for r in records if r.get("date")})
    if not days:
        return "undated"
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def made_by(command: str, records, machine: str | None = None) -> str:
    where = f"; {machine}" if machine else ""
    return f"`{command}`, {dates(records)}{where}."


def set_name(record: dict) -> str:
    split = record.get("split") or ""
    return f"{record['dataset']} {split}".strip()


# ---- speed and memory ----------------------------------------------------------------------
def scoring_speed() -> str:
    r = load("scoring_speed")
    rows = [["(a) ours: every reference-free method from one batched pass", num(r["ours_s"], ".1f"), "", ""],
            ["(b) a bare batched forward pass, the same batches", num(r["bare_forward_s"], ".1f"),
             f"(a)/(b) = **{r['ours_over_bare']:.3f}**", "≤ 1.15"],
            ["(c) a per-text loop, one forward per method and text", num(r["per_text_loop_s"], ".1f"),
             f"(c)/(a) = **{r['loop_over_ours']:.2f}**", "≥ 5"],
            ["largest difference between the scores of (a) and (c)", f"{r['max_abs_score_diff']:.1e}", "", "≤ 1e-4"]]
    head = made_by("python bench/scoring_speed.py", [r], r.get("machine"))
    return (f"{head} {r['model']}, {r['n_texts']} texts; (a) and (b) interleaved, best of "
            f"{len(r.get('all_ours_s', [1]))}.\n\n" + table(["", "seconds", "ratio", "target"], rows, "lrrl"))


def train_step_speed() -> str:
    records = [r for r in load("train_step_speed") if "peak_rss_gb" not in r]
    rows = [[r["model"], r["mode"], r["batch"], num(r["step_s"], ".1f"), num(r["bare_forward_backward_s"], ".1f"),
             f"**{r['ratio']:.2f}**", "≤ 1.25"] for r in records]
    head = made_by("python bench/train_step_speed.py --steps 4", records, records[0]["machine"])
    return head + "\n\n" + table(["model", "pipeline", "batch", "training step (s)", "bare forward + backward (s)",
                                  "ratio", "target"], rows, "lllrrrl")


def train_step_memory() -> str:
    records = [r for r in load("train_step_speed") if "peak_rss_gb" in r]
    rows = [[r["model"], r["variant"], r.get("chunk_positions"), num(r.get("mean_text_tokens"), ".0f"),
             f"{r['peak_rss_gb']:.2f} GB", num(r["step_s"], ".1f")] for r in records]
    head = made_by("python bench/train_step_speed.py --memory --models gemma-3-270m smollm2-135m-instruct "
                   "--steps 3 [--variants V --chunk N]", records, records[0]["machine"])
    return head + "\n\n" + table(["model", "variant", "positions a chunk", "tokens a text", "peak RSS",
                                  "step (s)"], rows, "llrrrr")


def gpu_check() -> str:
    records = load("gpu_check")
    device = next(r for r in records if r["check"] == "device")
    same = [r for r in records if "max_adapter_diff" in r]
    mixed = [r for r in records if "scores_finite" in r]
    speed = [r for r in records if r["check"] == "train-step-speed"]
    checks = [[f"same detector on CPU and CUDA, {r['mode']}", f"{r['max_adapter_diff']:.1e}",
               f"{r['max_score_diff']:.1e}", ""] for r in same]
    checks += [[f"mixed precision, {r['mode']}", "", "", f"loss {r['first_loss']:.3f} → {r['last_loss']:.3f}, "
                f"scores finite: {r['scores_finite']}"] for r in mixed]
    steps = [[r["model"], r["mode"], num(r["step_s"], ".3f"), num(r.get("first_epoch_step_s"), ".3f"),
              num(r["bare_forward_backward_s"], ".3f"), f"**{r['ratio']:.2f}**", "≤ 1.25"] for r in speed]
    head = made_by("python bench/gpu_check.py --shapes .gpu/shapes --texts .gpu/texts.jsonl", speed,
                   f"{device['name']}, torch {device['torch']}")
    return (head + "\n\n" + table(["check", "largest adapter difference", "largest score difference", "result"],
                                  checks) + "\n\n" +
            table(["model shape", "pipeline", "step, epoch 2 (s)", "step, epoch 1 (s)", "bare forward + backward (s)",
                   "ratio", "target"], steps, "llrrrrl"))


# ---- detection -------------------------------------------------------------------------------
def detection() -> str:
    from detection import markdown  # the sibling script's table (one renderer for both)

    records = load("detection")
    head = made_by("python bench/detection.py [--models M] [--sets S] [--controlled]", records)
    return head + " AUROC [95% CI] / TPR@1%FPR on each set's test part.\n" + markdown(records)


def shift() -> str:
    records = load("shift")
    sets = {(r["dataset"], r["split"], r["variant"]): r for r in records}
    set_rows = [[f"{d} {s}", v, num(r["blind_auroc"]), num(r["year_auroc"]), f"{r['n_member']}+{r['n_nonmember']}"]
                for (d, s, v), r in sets.items()]
    method_rows = [[set_name(r), r["variant"], r["model"] or "(no model)", r["method"], num(r["auroc"])]
                   for r in records if r["model"]]
    head = made_by("python bench/shift.py", records)
    return (head + " How much of each set a model-free classifier solves (5-fold cross-validated "
            "AUROC; `year`: the largest year named in the text alone):\n\n" +
            table(["set", "variant", "blind AUROC", "year AUROC", "texts"], set_rows, "llrrr") +
            "\n\nThe models' methods on the same variants (test part):\n\n" +
            table(["set", "variant", "model", "method", "AUROC"], method_rows, "llllr"))


# ---- MIA-Tuner and learned detectors ----------------------------------------------------------
def tuner_runs() -> str:
    records = load("tuner_runs")
    rows = [[r["model"], set_name(r), r["tag"], r["mode"], r["config"]["learning_rate"],
             num(r.get("initial_validation_auroc"), ".2f"), epoch_curve(r), r.get("chosen_epoch"),
             with_ci(r, "test_auroc"), num(r.get("train_seconds"), ".0f")] for r in records]
    head = made_by("python bench/tuner_runs.py --model M --set S [--record] [--learning-curve]", records)
    return head + "\n\n" + table(["model", "set", "run", "pipeline", "lr", "validation AUROC before training",
                                  "validation AUROC after each epoch", "epoch kept", "test AUROC [95% CI]",
                                  "training (s)"], rows, "llllrrlrlr")


def epoch_curve(record: dict) -> str:
    """The validation AUROC after each epoch, in order."""
    return ", ".join(num(e.get("validation_auroc"), ".2f") for e in record.get("epochs") or []) or None


def learning_curves() -> str:
    records = load("learning_curves")
    rows = [[r.get("source") or "bench/tuner_runs.py", r["model"], r.get("split") or r["dataset"], r["method"],
             r["train_per_class"], with_ci(r), r["n_test"]] for r in records]
    head = made_by("python bench/publish_suite.py RUN_DIR --curves (or bench/tuner_runs.py --learning-curve)",
                   records)
    return head + "\n\n" + table(["source", "model", "set", "method", "training texts per class",
                                  "test AUROC [95% CI]", "test texts"], rows, "llllrlr")


# ---- safeguards ---------------------------------------------------------------------------------
def _before_after(r: dict) -> list:
    return [with_ci(r, "auroc_before"), with_ci(r, "auroc_after"), f"{r['auroc_after'] - r['auroc_before']:+.3f}"]


def folded(summary: str, body: str) -> str:
    """A long table behind a summary line (GitHub shows it on a click)."""
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def safeguards() -> str:
    records = load("safeguards")
    rows = [[r["model"], r["safeguard"], r["method"] + (" (adaptive)" if r.get("adaptive") else ""),
             *_before_after(r), num(r.get("ppl_before"), ".2f"), num(r.get("ppl_after"), ".2f")] for r in records]
    head = made_by("python bench/safeguards.py …", records)
    return (head + " Every attack before and after each safeguard, on the held-out test texts of the "
            "controlled sets; perplexity on held-out text as the utility check.\n\n" +
            folded(f"{len(rows)} rows: every safeguard, every attack", table(
                ["model", "safeguard", "attack", "AUROC before", "AUROC after", "change", "perplexity before",
                 "perplexity after"], rows, "lllllrrr")))


def safeguard_seen() -> str:
    records = load("safeguard_seen")
    rows = [[r["model"], r["safeguard"], r["part"], r["method"], *_before_after(r),
             f"{r['n_member']}+{r['n_nonmember']}"] for r in records]
    head = made_by("python bench/safeguard_seen.py …", records)
    return (head + " The same defences on the texts the defender trained on and on texts it never saw.\n\n" +
            folded(f"{len(rows)} rows: every defence, both parts, every attack", table(
                ["model", "safeguard", "texts", "attack", "AUROC before", "AUROC after", "change", "test texts"],
                rows, "lllllrrr")))


# ---- reliability: interrupted runs ---------------------------------------------------------------
def _killed(r: dict) -> str:
    return f"exit {r['killed']['rc']} after {r['killed']['seconds']:.0f} s: “{r['killed']['last_line']}”"


def interrupted_runs() -> str:
    record = load("reliability")
    s, t, c = record["scores"], record["train"], record["controlled"]
    computed = ", ".join(map(str, sorted(set(s["texts_computed_by_rerun"].values()))))
    rows = [[s["fault"], _killed(s), f"{s['texts_finished_before_kill']} of {s['texts_total']} texts kept; the "
             f"re-run computed {computed} per method: **{s['texts_redone']} texts redone**"],
            [t["fault"], _killed(t), f"resumed at epoch {t['rerun_resumed_at']['epoch']}, step "
             f"{t['rerun_resumed_at']['step']} of {t['steps_per_epoch']} (steps done before the kill: epoch "
             f"{t['stopped_in_epoch']}, step {t['steps_done_in_that_epoch']})"],
            [c["fault"], _killed(c), f"resumed after step {c['rerun_resumed_after_step']} of {c['steps_total']} "
             f"(steps done before the kill: {c['steps_done_before_kill']}); set built: {c['built']}"]]
    head = made_by("python bench/reliability.py --only scores --only train --only controlled", [s, t, c])
    return head + "\n\n" + table(["fault", "the killed run", "the re-run"], rows)


RENDERERS = {"scoring-speed": scoring_speed, "train-step-speed": train_step_speed,
             "train-step-memory": train_step_memory, "gpu-check": gpu_check, "detection": detection,
             "shift": shift, "tuner-runs": tuner_runs, "learning-curves": learning_curves,
             "safeguards": safeguards, "safeguard-seen": safeguard_seen, "reliability:interrupted": interrupted_runs}
