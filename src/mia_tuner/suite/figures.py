"""The report's figures, as PNG files: ROC curves and score histograms per cell, training
curves of MIA-Tuner, and ablation curves (AUROC against training texts per class, and
across datasets)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..metrics import validate_scores  # noqa: E402
from ..reports import plot_roc, safe_filename  # noqa: E402
from .store import settings_key  # noqa: E402
from .tables import BLIND, column_order  # noqa: E402


def cell_name(model: str, dataset: str, n: int, seed: int) -> str:
    return safe_filename(f"{model}__{dataset}__n{n}__s{seed}")


def figure_path(out_dir: Path, stem: str, records: list[dict]) -> Path:
    """``out_dir/<stem>-<hash>.png``: the hash of the records drawn, so that a figure whose
    records did not change is not drawn again (a finished suite's report in seconds)."""
    digest = settings_key(sorted(r["sha256"] for r in records))[:10]
    return out_dir / f"{stem}-{digest}.png"


def cached(path: Path, draw) -> Path:
    if not path.is_file():
        draw(path)
    return path


def by_cell(records: list[dict]) -> dict[str, tuple[dict, dict[str, dict]]]:
    """``{cell_key: (cell record, {method: its record})}``."""
    cells = {r["cell_key"]: (r, {}) for r in records if r.get("kind") == "cell"}
    for r in records:
        if r.get("kind") == "method" and r["cell_key"] in cells:
            cells[r["cell_key"]][1][r["method"]] = r
    return cells


def _scores(method_records: dict[str, dict]) -> dict[str, np.ndarray]:
    return {m: np.asarray(method_records[m]["scores"], dtype=float) for m in column_order(method_records)}


def roc_figure(cell: dict, method_records: dict, out_dir: Path) -> Path:
    name = cell_name(cell["model"], cell["dataset"], cell["train_per_class"], cell["seed"])
    path = figure_path(out_dir, f"roc_{name}", [cell, *method_records.values()])
    return cached(path, lambda p: plot_roc(np.asarray(cell["labels"]), _scores(method_records), p))


def histogram_figure(cell: dict, method_records: dict, out_dir: Path) -> Path:
    name = cell_name(cell["model"], cell["dataset"], cell["train_per_class"], cell["seed"])
    path = figure_path(out_dir, f"hist_{name}", [cell, *method_records.values()])
    return cached(path, lambda p: _draw_histograms(cell, _scores(method_records), p))


def _draw_histograms(cell: dict, scores: dict, path: Path) -> None:
    """Member and non-member score histograms of every method of a cell, one panel each."""
    labels = np.asarray(cell["labels"])
    methods = column_order(scores)
    cols = min(4, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False)
    for ax, method in zip(axes.flat, methods):
        y, s = validate_scores(labels, scores[method])
        bins = np.histogram_bin_edges(s, bins=min(30, max(8, s.size // 6)))
        ax.hist(s[y == 0], bins=bins, alpha=0.55, color="tab:blue", label="non-member")
        ax.hist(s[y == 1], bins=bins, alpha=0.55, color="tab:red", label="member")
        ax.set_title(method, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{cell['model']} on {cell['dataset']}: scores (higher = more likely member)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def training_curve_figure(records: list[dict], out_dir: Path) -> Path | None:
    """Validation AUROC after every epoch (epoch 0: the untrained prompt) of each MIA-Tuner run."""
    runs = [r for r in records if r.get("kind") == "method" and r.get("history")]
    if not runs:
        return None
    return cached(figure_path(out_dir, "training_curves", runs), lambda p: _draw_training_curves(runs, p))


def _draw_training_curves(runs: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for r in runs:
        h = r["history"]
        epochs = [e for e in h.get("epochs", []) if e.get("validation_auroc") is not None]
        if not epochs:
            continue
        xs = [0] * (h.get("initial_validation_auroc") is not None) + [e["epoch"] for e in epochs]
        ys = [h["initial_validation_auroc"]] * (h.get("initial_validation_auroc") is not None) + \
             [e["validation_auroc"] for e in epochs]
        ax.plot(xs, ys, marker="o", lw=1.4,
                label=f"{r['method']} · {r['model']} · {r['dataset']} (n={r['train_per_class']}, seed {r['seed']})")
    ax.axhline(0.5, ls="--", color="grey", lw=1)
    ax.set(xlabel="epoch (0: untrained prompt)", ylabel="validation AUROC", title="MIA-Tuner training curves",
           ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _line_plot(series: dict, xlabel: str, title: str, path: Path, categorical: bool = False) -> Path:
    """One line per method through ``(x, auroc, error)`` points; categorical x: by name."""
    categories = sorted({p[0] for points in series.values() for p in points}, key=str)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for method, points in series.items():
        points = sorted(points, key=lambda p: categories.index(p[0]))
        xs = [categories.index(p[0]) if categorical else p[0] for p in points]
        ax.errorbar(xs, [p[1] for p in points], yerr=[p[2] for p in points], marker="o", capsize=3, lw=1.4,
                    label=method, ls="--" if method == BLIND else "-")
    if categorical:
        ax.set_xticks(range(len(categories)), categories, rotation=15, fontsize=8)
    ax.axhline(0.5, ls=":", color="grey", lw=1)
    ax.set(xlabel=xlabel, ylabel="test AUROC", title=title, ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _half_interval(entry) -> float:
    if len(entry.aurocs) > 1:
        return float(np.std(entry.aurocs, ddof=1))
    return float((entry.highs[0] - entry.lows[0]) / 2)


def ablation_figures(tables: list, records: list[dict], out_dir: Path) -> list[tuple[str, Path]]:
    """AUROC against training texts per class (per model and dataset) and across datasets
    (per model, at each training size), where the suite varies them; error bars: the 95%
    interval (one seed) or the spread over seeds."""
    grid = {(t.dataset, t.train_per_class): t.rows for t in tables}  # the metrics already computed
    method_records = [r for r in records if r.get("kind") in ("method", "cell")]
    figures = []
    by_size: dict = defaultdict(lambda: defaultdict(list))  # (model, dataset) -> method -> points
    by_data: dict = defaultdict(lambda: defaultdict(list))  # (model, n) -> method -> points
    for (dataset, n), rows in grid.items():
        for (_, model), row in rows.items():
            for method, entry in row.items():
                by_size[(model, dataset)][method].append((n, entry.auroc, _half_interval(entry)))
                by_data[(model, n)][method].append((dataset, entry.auroc, _half_interval(entry)))
    for (model, dataset), series in by_size.items():
        if len({p[0] for points in series.values() for p in points}) > 1:
            path = figure_path(out_dir, f"ablation_size_{safe_filename(model + '__' + dataset)}", method_records)
            figures.append((f"{model} on {dataset}: training texts per class", cached(path, lambda p, s=series: _line_plot(
                s, "training texts per class", f"{model} · {dataset}", p))))
    for (model, n), series in by_data.items():
        if len({p[0] for points in series.values() for p in points}) > 1:
            path = figure_path(out_dir, f"ablation_data_{safe_filename(f'{model}__n{n}')}", method_records)
            figures.append((f"{model} across datasets (n = {n})", cached(path, lambda p, s=series: _line_plot(
                s, "dataset", f"{model} · {n} training texts per class", p, categorical=True))))
    return figures
