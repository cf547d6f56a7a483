"""The suite's tables, shaped like the paper's: per dataset (and training-set size), a row per
model (aligned and base models apart), a column per method, AUROC with its interval and
TPR@1%FPR; the blind baseline always in the last column.

Several seeds give mean ± standard deviation over seeds. The best method of a row is marked
only when it beats the next best on the same texts: the paired bootstrap interval of their
AUROC difference (``metrics.paired_auroc_difference``) lies above 0 for every seed. The blind
baseline never competes: it reads the texts, not the model (a data-hygiene check).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..metrics import compute_metrics, paired_auroc_difference, wrong_way_warning

BLIND = "blind"
MODES = ("aligned", "base")


@dataclass
class Entry:
    """One method on one (model, dataset, n): a value per seed."""

    aurocs: list[float] = field(default_factory=list)
    lows: list[float] = field(default_factory=list)
    highs: list[float] = field(default_factory=list)
    tprs: list[float] = field(default_factory=list)
    scores: dict[int, np.ndarray] = field(default_factory=dict)  # seed -> test scores

    @property
    def auroc(self) -> float:
        return float(np.mean(self.aurocs))

    def text(self) -> str:
        if len(self.aurocs) == 1:
            return f"{self.aurocs[0]:.3f} [{self.lows[0]:.3f}, {self.highs[0]:.3f}]"
        return f"{self.auroc:.3f} ± {np.std(self.aurocs, ddof=1):.3f} ({len(self.aurocs)} seeds)"

    def tpr_text(self) -> str:
        return f"{np.mean(self.tprs):.3f}"


@dataclass
class Table:
    """One paper-style table: ``rows[(mode, model)][method] -> Entry``."""

    dataset: str
    train_per_class: int
    methods: list[str]
    rows: dict[tuple[str, str], dict[str, Entry]]
    best: dict[tuple[str, str], str | None]  # the marked method of each row (None: no clear winner)
    n_test: dict[tuple[str, str], int]

    @property
    def title(self) -> str:
        return f"{self.dataset} — {self.train_per_class} training texts per class"


def kind(name: str) -> str | None:
    """What a column's method needs, from the registry's capabilities (never a list of names):
    "free" (the model alone), "labelled" (labelled texts), "reference" (a reference model,
    maybe adapted with labelled non-members), "tuner" (a MIA-Tuner variant), "blind" (no
    model); None for a column the registry does not know."""
    from ..methods.base import METHODS

    if name.startswith("mia-tuner"):
        return "tuner"
    cls = METHODS.get(name.split(":")[0])
    if cls is None:
        return None
    if not cls.uses_model:
        return "blind"
    if cls.uses_labels is True:  # a learned detector (`fused+ref` too); adapted references below
        return "labelled"
    return "reference" if cls.needs_reference else "free"


def reads_reference(name: str) -> bool:
    from ..methods.base import METHODS

    cls = METHODS.get(name.split(":")[0])
    return cls is not None and cls.needs_reference


COLUMN_RANK = {"free": 0, "reference": 1, "labelled": 2, "tuner": 3, None: 4, "blind": 5}


def column_order(methods) -> list[str]:
    """Score-based methods first, then reference ones (the adapted after the others), those
    that learn from labels, MIA-Tuner, blind last; in the registry's order within each, then
    as recorded."""
    from ..methods.base import METHODS

    registry = list(METHODS)
    seen = list(dict.fromkeys(methods))

    def key(name: str):
        base = name.split(":")[0]
        return (COLUMN_RANK[kind(name)], name.endswith(":adapted"),
                registry.index(base) if base in registry else len(registry), seen.index(name))
    return sorted(seen, key=key)


def _cells(records: list[dict]) -> dict[str, dict]:
    return {r["cell_key"]: r for r in records if r.get("kind") == "cell"}


def axis(record: dict) -> str:
    """The dataset as the suite names it (``controlled:{model}:600``: one table for every
    model's own controlled set), else the resolved name."""
    return record.get("dataset_axis") or record["dataset"]


def collect(records: list[dict]) -> dict:
    """``{(dataset, n): {(mode, model): {method: Entry}}}`` from the suite's records."""
    cells = _cells(records)
    grid: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(Entry)))
    for r in records:
        if r.get("kind") != "method" or r["cell_key"] not in cells:
            continue
        cell = cells[r["cell_key"]]
        labels = np.asarray(cell["labels"])
        scores = np.asarray(r["scores"], dtype=float)
        m = compute_metrics(labels, scores)
        entry = grid[(axis(r), r["train_per_class"])][(cell["mode"], r["model"])][r["method"]]
        entry.aurocs.append(m.auroc)
        entry.lows.append(m.auroc_low)
        entry.highs.append(m.auroc_high)
        entry.tprs.append(m.tpr_at_fpr.get(0.01, float("nan")))
        entry.scores[r["seed"]] = scores
    return grid


def clear_winner(row: dict[str, Entry], labels_by_seed: dict[int, np.ndarray]) -> str | None:
    """The best method of a row when it beats the next best on every seed's paired interval."""
    ranked = sorted((name for name in row if name != BLIND), key=lambda n: row[n].auroc, reverse=True)
    if len(ranked) < 2:
        return ranked[0] if ranked else None
    best, second = row[ranked[0]], row[ranked[1]]
    for seed, scores in best.scores.items():
        if seed not in second.scores:
            return None
        diff = paired_auroc_difference(labels_by_seed[seed], scores, second.scores[seed])
        if not diff["low"] > 0:
            return None
    return ranked[0]


def build_tables(records: list[dict]) -> list[Table]:
    cells = _cells(records)
    labels: dict = defaultdict(dict)  # (dataset, n, model) -> seed -> labels
    n_test: dict = {}
    for cell in cells.values():
        labels[(axis(cell), cell["train_per_class"], cell["model"])][cell["seed"]] = np.asarray(cell["labels"])
        n_test[(axis(cell), cell["train_per_class"], cell["model"])] = cell["n_test"]
    tables = []
    for (dataset, n), rows in collect(records).items():
        ordered = {key: rows[key] for key in sorted(rows, key=lambda k: (MODES.index(k[0]), k[1]))}
        methods = column_order(m for row in ordered.values() for m in row)
        best = {key: clear_winner(row, labels[(dataset, n, key[1])]) for key, row in ordered.items()}
        tables.append(Table(dataset, n, methods, ordered, best,
                            {key: n_test[(dataset, n, key[1])] for key in ordered}))
    return tables


def table_rows(table: Table) -> list[dict]:
    """Flat rows (CSV): one per (model, method)."""
    out = []
    for (mode, model), row in table.rows.items():
        for method in table.methods:
            if method not in row:
                continue
            e = row[method]
            out.append({"dataset": table.dataset, "train_per_class": table.train_per_class, "mode": mode,
                        "model": model, "method": method, "auroc": round(e.auroc, 4),
                        "auroc_sd": round(float(np.std(e.aurocs, ddof=1)), 4) if len(e.aurocs) > 1 else "",
                        "auroc_low": round(float(np.mean(e.lows)), 4), "auroc_high": round(float(np.mean(e.highs)), 4),
                        "tpr_at_1_fpr": round(float(np.mean(e.tprs)), 4), "seeds": len(e.aurocs),
                        "n_test": table.n_test[(mode, model)],
                        "best": method == table.best[(mode, model)]})
    return out


def table_markdown(table: Table) -> str:
    """The table as Markdown: AUROC [95% CI] / TPR@1%FPR per cell; the clear winner in bold."""
    head = ["mode", "model", *table.methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (mode, model), row in table.rows.items():
        cells = []
        for method in table.methods:
            if method not in row:
                cells.append("—")
                continue
            text = f"{row[method].text()} / {row[method].tpr_text()}"
            cells.append(f"**{text}**" if table.best[(mode, model)] == method else text)
        lines.append("| " + " | ".join([mode, model, *cells]) + " |")
    return "\n".join(lines)


def safeguard_rows(records: list[dict]) -> list[dict]:
    """Every attack before / after every safeguard (one row each); where the record has them,
    the same attack on the defender's own texts (``seen_before``, ``seen_after``) and on the
    model before injection (``floor``: the perfect defence)."""
    from ..safeguards.report import beside

    out = []
    for r in records:
        if r.get("kind") != "safeguard":
            continue
        for row in beside(r["rows"], r.get("seen_rows"), (r.get("floor") or {}).get("rows")):
            out.append({"model": r["model"], "dataset": r["dataset"], "seed": r["seed"],
                        "safeguard": r["safeguard"], **row})
    return out


def safeguard_extra_columns(rows: list[dict]) -> dict[str, callable]:
    """The columns beside before / after that some row has: header -> its cell of a row."""
    from ..safeguards.report import floor_cell, seen_cell

    columns = {}
    if any("seen_before" in r for r in rows):
        columns["defender's own texts, AUROC before → after"] = seen_cell
    if any("floor" in r for r in rows):
        columns["perfect defence (model before injection), AUROC"] = floor_cell
    return columns


def _validation_auroc(record: dict) -> float | None:
    """The validation AUROC at which a learned column was kept: a fine-tuned reference or
    target (its card), or a MIA-Tuner variant (the chosen epoch; 0 is the untrained prompt)."""
    card = (record.get("info") or {}).get("fine_tuned") or {}
    chosen = (card.get("chosen") or {}).get("validation_auroc") or {}
    if record["method"] in chosen:
        return chosen[record["method"]]
    history = record.get("history") or {}
    epoch = history.get("chosen_epoch")
    if epoch == 0:
        return history.get("initial_validation_auroc")
    return next((e.get("validation_auroc") for e in history.get("epochs", []) if e.get("epoch") == epoch), None)


def wrong_way_rows(records: list[dict]) -> list[str]:
    """A warning line per learned column whose validation texts are ranked the wrong way round."""
    out = []
    for r in records:
        if r.get("kind") != "method":
            continue
        warning = wrong_way_warning(r["method"], _validation_auroc(r))
        if warning:
            out.append(f"{r['model']} · {r['dataset']} · {r['train_per_class']} per class · seed {r['seed']}: {warning}")
    return out


def _comparisons(row: dict[str, Entry]) -> list[tuple[str, str]]:
    """(a, b) pairs a reader asks about: each detector that uses labelled texts or a reference
    against the best reference-free score-based method of the row (picked on these texts:
    favours the baseline), each reference method against `ref`, and each MIA-Tuner variant
    against `fused`."""
    scored = [m for m in row if kind(m) == "free"]
    pairs = []
    if scored:
        best = max(scored, key=lambda m: row[m].auroc)
        pairs += [(m, best) for m in row if kind(m) in ("labelled", "tuner", "reference")]
    if "ref" in row:
        pairs += [(m, "ref") for m in row if reads_reference(m) and m != "ref"]
    if "fused" in row:
        pairs += [(m, "fused") for m in row if m.startswith("mia-tuner")]
    return pairs


def paired_rows(tables: list[Table], records: list[dict]) -> list[dict]:
    """Paired bootstrap intervals of AUROC differences on the same test texts, per seed."""
    labels = {(axis(c), c["train_per_class"], c["model"], c["seed"]): np.asarray(c["labels"])
              for c in _cells(records).values()}
    out = []
    for table in tables:
        for (mode, model), row in table.rows.items():
            for a, b in _comparisons(row):
                for seed in sorted(set(row[a].scores) & set(row[b].scores)):
                    y = labels[(table.dataset, table.train_per_class, model, seed)]
                    d = paired_auroc_difference(y, row[a].scores[seed], row[b].scores[seed])
                    out.append({"dataset": table.dataset, "train_per_class": table.train_per_class, "mode": mode,
                                "model": model, "seed": seed, "comparison": f"{a} − {b}",
                                "difference": round(d["difference"], 4), "low": round(d["low"], 4),
                                "high": round(d["high"], 4)})
    return out
