"""Turn per-method scores and metrics into tables, plots and a run directory.

A run directory holds ``config.json``, ``scores.csv``, ``metrics.json``, ``table.md``,
``roc.png`` and one ``hist_<method>.png`` per method.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .integrity import content_sha256, file_sha256  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from .metrics import Metrics, sample_size_warning, validate_scores  # noqa: E402

TABLE_FPR_LEVELS = (0.001, 0.01, 0.05, 0.1)
BALANCED_COLUMN = "Bal. acc*"
TABLE_NOTE = ("* balanced accuracy at the best threshold chosen on these same test texts: an upper "
              "bound, not what a threshold fixed in advance would reach")
_RESERVED_COLUMNS = ("index", "label", "text")


def _tpr_column(level: float) -> str:
    """Table column name of TPR at a FPR level: 0.01 -> ``"TPR@1%FPR"``."""
    return f"TPR@{level * 100:g}%FPR"


def metrics_table(results: dict[str, Metrics]) -> pd.DataFrame:
    """One row per method (in the dict's order) with the headline metrics as numbers."""
    rows = []
    for name, m in results.items():
        row = {"method": name, "AUROC": m.auroc, "AUROC low": m.auroc_low, "AUROC high": m.auroc_high}
        for level in TABLE_FPR_LEVELS:
            row[_tpr_column(level)] = m.tpr_at_fpr.get(level, float("nan"))
        row["FPR@95%TPR"] = m.fpr_at_95_tpr
        row[BALANCED_COLUMN] = m.balanced_accuracy
        rows.append(row)
    columns = ["method", "AUROC", "AUROC low", "AUROC high",
               *[_tpr_column(level) for level in TABLE_FPR_LEVELS], "FPR@95%TPR", BALANCED_COLUMN]
    return pd.DataFrame(rows, columns=columns)


def _fmt(value) -> str:
    """A number with 3 decimals; None, NaN and infinities as ``-``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{number:.3f}" if math.isfinite(number) else "-"


def _display_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells: AUROC merged with its interval, other numbers to 3 decimals."""
    has_interval = {"AUROC low", "AUROC high"} <= set(df.columns)
    header = []
    for col in df.columns:
        if has_interval and col in ("AUROC low", "AUROC high"):
            continue
        header.append("AUROC [95% CI]" if has_interval and col == "AUROC" else str(col))
    rows = []
    for _, rec in df.iterrows():
        cells = []
        for col in df.columns:
            if has_interval and col in ("AUROC low", "AUROC high"):
                continue
            value = rec[col]
            if col == "method":
                cells.append(str(value))
            elif has_interval and col == "AUROC":
                low, high = rec["AUROC low"], rec["AUROC high"]
                interval = "" if _fmt(low) == "-" else f" [{_fmt(low)}, {_fmt(high)}]"
                cells.append(_fmt(value) + interval)
            else:
                cells.append(_fmt(value) if isinstance(value, (int, float, np.number)) else str(value))
        rows.append(cells)
    return header, rows


def table_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table of :func:`metrics_table` output (method left, numbers right)."""
    header, rows = _display_rows(df)

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = [":---" if h == "method" else "---:" for h in header]
    return "\n".join([line(header), "|" + "|".join(align) + "|", *map(line, rows)]) + "\n"


def table_text(df: pd.DataFrame) -> str:
    """The table as aligned plain text for a terminal."""
    header, rows = _display_rows(df)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        parts = [c.ljust(w) if h == "method" else c.rjust(w) for c, w, h in zip(cells, widths, header)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, rows)]) + "\n"


def table_warnings(labels=None, warnings=()) -> list[str]:
    """What a table must say next to it: too few test texts (``labels``), and ``warnings``."""
    found = [sample_size_warning(labels)] if labels is not None else []
    return [w for w in [*found, *warnings] if w]


BEST_MARK = "<- best of its group"


def grouped_table_text(results: dict[str, Metrics], groups: dict[str, str], order=()) -> str:
    """The table as aligned plain text with its rows grouped (``groups``: row -> group, shown
    in ``order``, then any other), each group under its title and its row of highest AUROC on
    these test texts marked (a description of this table, not a choice made in advance)."""
    titles = list(dict.fromkeys([*[g for g in order if g in groups.values()], *groups.values()]))
    ordered = {title: [name for name in results if groups.get(name) == title] for title in titles}
    ordered[""] = [name for name in results if name not in groups]
    names = [name for rows in ordered.values() for name in rows]
    header, rows = _display_rows(metrics_table({name: results[name] for name in names}))
    cells = dict(zip(names, rows))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row):
        return "  ".join(c.ljust(w) if h == "method" else c.rjust(w) for c, w, h in zip(row, widths, header)).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    for title, members in ordered.items():
        if not members:
            continue
        out.append(f"[{title or 'other'}]")
        best = max(members, key=lambda name: results[name].auroc) if len(members) > 1 else None
        out += [line(cells[name]) + (f"  {BEST_MARK}" if name == best else "") for name in members]
    return "\n".join(out) + "\n"


def with_note(table: str, labels=None, warnings=()) -> str:
    """A rendered table followed by the footnote of its balanced-accuracy column and the
    warnings of table_warnings."""
    notes = [TABLE_NOTE] if BALANCED_COLUMN in table else []
    notes += table_warnings(labels, warnings)
    return "".join([table, *(f"\n{note}\n" for note in notes)])


def safe_filename(name: str) -> str:
    """A file-name-safe version of a method name: ``"min-k%++"`` -> ``"min-k_pp"``.

    ``+`` becomes ``p``; anything outside letters, digits, ``.``, ``_`` and ``-`` becomes
    ``_``; runs of ``_`` collapse; leading/trailing ``_`` and ``.`` are stripped.
    """
    text = str(name).replace("+", "p")
    text = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    text = re.sub(r"_+", "_", text).strip("_.")
    return text or "method"


def _unique_filenames(names) -> dict[str, str]:
    """Map each name to a distinct safe stem (``_2``, ``_3``... appended on collisions)."""
    used: set[str] = set()
    out = {}
    for name in names:
        stem, base, i = safe_filename(name), safe_filename(name), 1
        while stem.lower() in used:
            i += 1
            stem = f"{base}_{i}"
        used.add(stem.lower())
        out[name] = stem
    return out


def plot_roc(labels, scores: dict, path) -> Path:
    """One PNG with a linear ROC panel and a log-FPR panel (1e-3..1); AUROC in the legend."""
    path = Path(path)
    fig, (ax_lin, ax_log) = plt.subplots(1, 2, figsize=(12, 5.2))
    for name, values in scores.items():
        y, s = validate_scores(labels, values)
        fpr, tpr, _ = roc_curve(y, s)
        label = f"{name} (AUROC {roc_auc_score(y, s):.3f})"
        (line,) = ax_lin.plot(fpr, tpr, lw=1.6, label=label)
        # FPR 0 cannot sit on a log axis; draw it just left of the visible range instead
        ax_log.plot(np.maximum(fpr, 1e-4), tpr, lw=1.6, color=line.get_color(), label=label)
    grid = np.logspace(-3, 0, 200)
    ax_lin.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax_log.plot(grid, grid, ls="--", color="grey", lw=1, label="chance")
    ax_lin.set(xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    ax_log.set(xscale="log", xlim=(1e-3, 1), ylim=(0, 1.01), title="ROC (log FPR)")
    for ax in (ax_lin, ax_log):
        ax.set_xlabel("False positive rate (non-members flagged)")
        ax.set_ylabel("True positive rate (members detected)")
        ax.grid(alpha=0.3, which="both")
    ax_lin.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_histograms(labels, scores: dict, out_dir) -> list[Path]:
    """One PNG per method (``hist_<safe name>.png``): member vs non-member score histograms."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = _unique_filenames(scores)
    paths = []
    for name, values in scores.items():
        y, s = validate_scores(labels, values)
        bins = np.histogram_bin_edges(s, bins=min(40, max(10, s.size // 5)))
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.hist(s[y == 0], bins=bins, alpha=0.55, color="tab:blue", label=f"non-member (n={int((y == 0).sum())})")
        ax.hist(s[y == 1], bins=bins, alpha=0.55, color="tab:red", label=f"member (n={int(y.sum())})")
        ax.set(xlabel="score (higher = more likely member)", ylabel="count",
               title=f"{name}: AUROC {roc_auc_score(y, s):.3f}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"hist_{stems[name]}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def jsonable(obj):
    """Convert dataclasses, numpy values, paths and non-finite floats to strict JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, np.ndarray)):
        return [jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _write_json(path: Path, data) -> None:
    """Write strict JSON (UTF-8, indented)."""
    path.write_text(json.dumps(jsonable(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                    encoding="utf-8")


def write_artefact_json(directory: Path, name: str, info: dict, unchecked=()) -> dict:
    """Write an artefact's description ``directory/name``: ``info`` plus the SHA-256 of every
    other file in the folder (``files``; ``unchecked`` names are left out) and of its own
    content (``sha256``), which ``integrity.check_self_hash`` / ``check_recorded_files`` verify."""
    skip = {name, *unchecked}
    files = sorted(p for p in Path(directory).iterdir() if p.is_file() and p.name not in skip)
    info = {**info, "files": {p.name: file_sha256(p) for p in files}}
    info["sha256"] = content_sha256(jsonable(info))
    _write_json(Path(directory) / name, info)
    return info


def _check_inputs(texts, labels, scores: dict) -> None:
    """Every score array must match the texts; method names must not shadow fixed columns."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    for name, values in scores.items():
        if name in _RESERVED_COLUMNS:
            raise ValueError(f"method name {name!r} clashes with a scores.csv column")
        if len(values) != len(texts):
            raise ValueError(f"method {name!r} has {len(values)} scores for {len(texts)} texts")


def write_run(out_dir, *, config: dict, texts, labels, scores: dict[str, np.ndarray],
              metrics: dict[str, Metrics], extra: dict | None = None, warnings=()) -> Path:
    """Write a complete run directory (created if needed) and return its path.

    ``metrics.json`` is ``{"n_texts": N, "methods": {name: Metrics.to_dict()}, "warnings": [...]}``
    (table_warnings: too few test texts, and ``warnings``) plus ``"extra": extra`` when given
    (e.g. per-method info such as timings or settings).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_inputs(texts, labels, scores)
    _write_json(out / "config.json", config)
    frame = pd.DataFrame({"index": np.arange(len(texts)), "label": np.asarray(labels, dtype=int),
                          "text": list(texts)})
    for name, values in scores.items():
        frame[name] = np.asarray(values, dtype=float)
    frame.to_csv(out / "scores.csv", index=False)
    payload: dict = {"n_texts": len(texts), "methods": {k: m.to_dict() for k, m in metrics.items()}}
    payload["warnings"] = table_warnings(labels, warnings)
    if extra is not None:
        payload["extra"] = extra
    _write_json(out / "metrics.json", payload)
    (out / "table.md").write_text(with_note(table_markdown(metrics_table(metrics)), labels, warnings),
                                  encoding="utf-8")
    plot_roc(labels, scores, out / "roc.png")
    for stale in out.glob("hist_*.png"):  # a re-used folder: no plot of a method not in this run
        stale.unlink()
    plot_histograms(labels, scores, out)
    return out
