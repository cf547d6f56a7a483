"""The suite's report: ``report.html`` (one self-contained file: figures embedded as data
URIs, no script, no link outside it, so it opens offline), ``report.md`` and ``tables.csv``
with the same tables, ``figures/`` with the PNGs, and ``provenance.json``."""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from ..reports import jsonable
from .figures import ablation_figures, by_cell, histogram_figure, roc_figure, training_curve_figure
from .tables import (Table, axis, build_tables, paired_rows, safeguard_extra_columns, safeguard_rows,
                     table_markdown, table_rows, wrong_way_rows)

PACKAGES = ("mia-tuner", "torch", "transformers", "peft", "accelerate", "datasets", "scikit-learn", "numpy")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1400px;padding:0 1rem;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.7rem}h2{margin-top:2.2rem;border-bottom:2px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.86rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f1f3f6}td.best{background:#e3f4e1;font-weight:600}tr.mode td{background:#fafafa;font-style:italic}
td.blind{color:#555;background:#f7f7f7}.note{color:#444;font-size:.88rem;max-width:70rem}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85rem;color:#444}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:.8rem}.tpr{color:#555;font-size:.8rem}
"""


def provenance(suite, source: str, started: float, records: list[dict]) -> dict:
    """Configuration, versions, commit, machine and time taken behind every number."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"suite": dataclasses.asdict(suite), "source": source, "versions": versions,
            "python": platform.python_version(), "git_commit": git_commit(),
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "cpus": os.cpu_count(), "gpu": gpu_name()},
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "wall_seconds_this_run": round(time.time() - started, 1),
            "compute_seconds_recorded": round(sum(r.get("seconds", 0.0) for r in records), 1)}


def git_commit() -> str | None:
    """The commit of the source tree this package runs from (with ``-dirty``), if it is one."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _prune(fig_dir: Path, used: list[Path]) -> None:
    """Remove figures of records that are gone or changed (their hash is in the name)."""
    keep = {p.name for p in used}
    for path in fig_dir.glob("*.png"):
        if path.name not in keep:
            path.unlink()


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in table.methods)
    rows, mode_shown = [], None
    for (mode, model), row in table.rows.items():
        if mode != mode_shown:
            rows.append(f'<tr class="mode"><td colspan="{len(table.methods) + 2}">{mode} models</td></tr>')
            mode_shown = mode
        cells = []
        for method in table.methods:
            entry = row.get(method)
            css = "best" if table.best[(mode, model)] == method else ("blind" if method == "blind" else "")
            text = "—" if entry is None else (f"{html.escape(entry.text())}<br>"
                                              f'<span class="tpr">TPR@1%FPR {entry.tpr_text()}</span>')
            cells.append(f'<td class="{css}">{text}</td>')
        rows.append(f"<tr><td>{html.escape(model)}</td><td>{table.n_test[(mode, model)]}</td>{''.join(cells)}</tr>")
    return (f"<h3>{html.escape(table.title)}</h3><table><thead><tr><th>model</th><th>test texts</th>{head}</tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def _html_table(headers: list[str], rows: list[list]) -> str:
    """A plain table; every cell escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interval(value: float, low: float, high: float, signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    return f"{value:{f}} [{low:{f}}, {high:{f}}]"


def _paired_html(rows: list[dict]) -> str:
    if not rows:
        return ""
    table = _html_table(
        ["dataset", "per class", "model", "seed", "difference of AUROC", "value [95% paired interval]"],
        [[r["dataset"], r["train_per_class"], r["model"], r["seed"], r["comparison"],
          _interval(r["difference"], r["low"], r["high"], signed=True)] for r in rows])
    return ("<h3>Paired differences on the same test texts</h3><p class=\"note\">Detectors that use labelled "
            "texts against the best reference-free score-based method of their row (picked on the test texts, "
            "which favours it), and MIA-Tuner against <code>fused</code>.</p>" + table)


def _safeguards_html(rows: list[dict]) -> str:
    if not rows:
        return ""
    extra = safeguard_extra_columns(rows)
    table = _html_table(
        ["model", "dataset", "safeguard", "attack", "AUROC before", "AUROC after", "TPR@1%FPR before", "after",
         *extra],
        [[r["model"], r["dataset"], r["safeguard"], r["method"] + (" (adaptive)" if r["adaptive"] else ""),
          _interval(r["auroc_before"], r["auroc_before_low"], r["auroc_before_high"]),
          _interval(r["auroc_after"], r["auroc_after_low"], r["auroc_after_high"]),
          f"{r['tpr_at_1_fpr_before']:.3f}", f"{r['tpr_at_1_fpr_after']:.3f}",
          *(cell(r) for cell in extra.values())] for r in rows])
    return "<h2>Safeguards: every attack before and after</h2>" + table


def _hygiene_rows(tables: list[Table], records: list[dict]) -> list[dict]:
    """Per dataset (first cell seen): duplicates, words per class, blind AUROC."""
    out, seen = [], set()
    tables = {(t.dataset, t.train_per_class): t for t in tables}
    for r in records:
        if r.get("kind") != "cell" or r["dataset"] in seen:
            continue
        seen.add(r["dataset"])
        h = r["hygiene"]
        blind = [row.get("blind") for key, t in tables.items() if key[0] == axis(r)
                 for (_, model), row in t.rows.items() if model == r["model"]]
        blind = [b for b in blind if b is not None]
        out.append({"dataset": r["dataset"], "texts": h.get("n_member", 0) + h.get("n_nonmember", 0),
                    "duplicates": h.get("duplicates", {}),
                    "words": {c: h.get("words", {}).get(c, {}).get("mean") for c in ("member", "nonmember")},
                    "blind_auroc": blind[0].text() if blind else "not run"})
    return out


def _hygiene_html(rows: list[dict]) -> str:
    if not rows:  # nothing recorded yet (a report-only run of a suite not started)
        return ""
    table = _html_table(
        ["dataset", "texts", "duplicates", "mean words (member / non-member)", "blind AUROC"],
        [[r["dataset"], r["texts"], _duplicates(r["duplicates"]),
          f"{_num(r['words']['member'])} / {_num(r['words']['nonmember'])}", r["blind_auroc"]] for r in rows])
    return "<h2>Datasets: hygiene</h2>" + table


def _duplicates(d: dict) -> str:
    return (f"extra copies: {d.get('member_extra_copies', 0)} member, {d.get('nonmember_extra_copies', 0)} "
            f"non-member; texts in both classes: {d.get('in_both_classes', 0)}")


def _num(value) -> str:
    return "—" if value is None else f"{value:.1f}"


NOTE = ("Cells: AUROC [95% bootstrap interval] (several seeds: mean ± standard deviation over seeds) and "
        "TPR at 1% FPR. A cell is marked (green) only when its method beats the row's next best on the same "
        "test texts: the paired bootstrap interval of the AUROC difference lies above 0 for every seed. "
        "The blind baseline (grey) reads only the texts, never the model: where it is far above 0.5 the "
        "labels can be told from the texts alone and no row measures membership. On controlled sets `ref` "
        "uses the model before injection, an oracle no real user has.")


def _skipped_html(skipped: list[str]) -> str:
    if not skipped:
        return ""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in skipped)
    return f"<h2>Datasets not run</h2><p class=\"note\">Optional sets that could not be had:</p><ul>{items}</ul>"


def _warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    return f"<h3>Learned columns that rank their validation texts the wrong way round</h3><ul>{items}</ul>"


def _pending_html(pending: list[str]) -> str:
    if not pending:
        return ""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in pending)
    return (f'<h2>Incomplete: {len(pending)} cell(s) with columns not computed yet</h2><p class="note">This '
            f"report shows what the suite has recorded so far; these are missing from its tables:</p><ul>{items}</ul>")


def write_report(suite, records: list[dict], out_dir, *, source: str, started: float,
                 skipped: list[str] = (), pending: list[str] = ()) -> dict:
    """Write the report files into ``out_dir``; their paths. ``pending``: columns not yet
    computed (a report of a suite under way), listed first."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    tables = build_tables(records)
    paired = paired_rows(tables, records)
    parts = [f"<h1>mia-tuner suite “{html.escape(suite.name)}”</h1>", _pending_html(list(pending)),
             f'<p class="note">{html.escape(NOTE)}</p>', "<h2>Detection: AUROC and TPR@1%FPR</h2>", *(_table_html(t) for t in tables),
             _paired_html(paired), _warnings_html(wrong_way_rows(records)),
             _safeguards_html(safeguard_rows(records)), _hygiene_html(_hygiene_rows(tables, records)),
             _skipped_html(list(skipped))]
    used: list[Path] = []

    def img(path: Path, caption: str) -> str:
        used.append(path)
        return _image(path, caption)

    curves = [training_curve_figure(records, fig_dir)]
    ablations = ablation_figures(tables, records, fig_dir)
    if any(curves) or ablations:
        parts.append("<h2>Training and ablation curves</h2>")
        parts += [img(p, "MIA-Tuner: validation AUROC per epoch") for p in curves if p]
        parts += [img(p, caption) for caption, p in ablations]
    cells = by_cell(records).values()
    if any(method_records for _, method_records in cells):
        parts.append("<h2>ROC curves and score histograms per cell</h2>")
    for cell, method_records in cells:
        if not method_records:
            continue
        title = f"{cell['model']} · {cell['dataset']} · {cell['train_per_class']} per class · seed {cell['seed']}"
        parts.append(f"<h3>{html.escape(title)}</h3>")
        parts.append(img(roc_figure(cell, method_records, fig_dir), f"ROC curves (linear and log FPR): {title}"))
        parts.append(img(histogram_figure(cell, method_records, fig_dir), f"Score histograms: {title}"))
    _prune(fig_dir, used)
    prov = provenance(suite, source, started, records)
    parts.append("<h2>Provenance</h2><pre>" + html.escape(json.dumps(jsonable(prov), indent=1)) + "</pre>")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mia-tuner: {html.escape(suite.name)}'
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    paths = {"html": out_dir / "report.html", "markdown": out_dir / "report.md", "csv": out_dir / "tables.csv",
             "paired_csv": out_dir / "paired.csv", "provenance": out_dir / "provenance.json"}
    paths["html"].write_text(page, encoding="utf-8")
    paths["markdown"].write_text(report_markdown(suite, tables, paired, records, prov, list(skipped), list(pending)),
                                 encoding="utf-8")
    _write_csv(paths["csv"], [row for t in tables for row in table_rows(t)])
    _write_csv(paths["paired_csv"], paired)
    paths["provenance"].write_text(json.dumps(jsonable(prov), indent=1) + "\n", encoding="utf-8")
    return paths


def report_markdown(suite, tables: list[Table], paired: list[dict], records: list[dict], prov: dict,
                    skipped=(), pending=()) -> str:
    lines = [f"# mia-tuner suite “{suite.name}”", ""]
    if pending:
        lines += [f"**Incomplete: {len(pending)} cell(s) with columns not computed yet** (this report shows "
                  "what the suite has recorded so far):", "", *(f"- {p}" for p in pending), ""]
    lines += [NOTE, ""]
    if skipped:
        lines += ["Not run (optional sets that could not be had): " + "; ".join(skipped), ""]
    for t in tables:
        lines += [f"## {t.title}", "", table_markdown(t), ""]
    if paired:
        lines += ["## Paired differences (AUROC, same test texts)", "",
                  "| dataset | per class | model | seed | difference | value [95% CI] |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['dataset']} | {r['train_per_class']} | {r['model']} | {r['seed']} | {r['comparison']} | "
                  f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] |" for r in paired]
        lines.append("")
    warnings = wrong_way_rows(records)
    if warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in warnings), ""]
    guards = safeguard_rows(records)
    if guards:
        extra = safeguard_extra_columns(guards)
        headers = ["model", "dataset", "safeguard", "attack", "AUROC before", "AUROC after", *extra]
        lines += ["## Safeguards", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join([r["model"], r["dataset"], r["safeguard"],
                                     r["method"] + (" (adaptive)" if r["adaptive"] else ""),
                                     f"{r['auroc_before']:.3f}", f"{r['auroc_after']:.3f}",
                                     *(cell(r) for cell in extra.values())]) + " |" for r in guards]
        lines.append("")
    lines += ["## Provenance", "", f"- commit: {prov['git_commit']}", f"- finished: {prov['finished']}",
              f"- machine: {prov['machine']}", f"- versions: {prov['versions']}",
              f"- compute recorded: {prov['compute_seconds_recorded']} s; this run: {prov['wall_seconds_this_run']} s",
              ""]
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if not rows:
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
