"""A self-contained HTML report of one run, or of two runs side by side, for a classroom or a meeting.

One file that opens offline: plotly.js is embedded once (with the first figure), every chart is
interactive, every figure comes from fedlab.charts and the fairness tables from fedlab.fairness.
Sections: settings, learning curves, final metrics with baselines, per-category results and confusion
matrices, per-client accuracy, fairness (best and worst served clients; accuracy against data
size) and, when a run used differential privacy, its privacy budget.

Everything a person typed (run names, client ids, error messages, file names) is HTML-escaped.
"""
from __future__ import annotations

import argparse
import html
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from fedlab import charts
from fedlab.errors import FedlabError
from fedlab.fairness import FAIRNESS_CLIENTS, best_and_worst, client_table, correlation_text
from fedlab.metrics_table import metrics_table, num, pct
from fedlab.privacy import dp_epsilon, sampling_rate
from fedlab.settings_text import settings_rows
from fedlab.store import Run, RunStore, default_path, feature_label

FIGURE_HEIGHT = "460px"  # figures that set no height of their own
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1.5rem; color: #111827; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #e5e7eb; padding-bottom: .3rem; }
.meta, .note { color: #4b5563; font-size: .92rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #e5e7eb; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f9fafb; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.diff td { background: #fef9c3; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1rem; }
.dot { font-size: 1.2rem; } nav a { margin-right: .8rem; }
@media print { nav { display: none; } h2 { break-before: auto; } }
"""


@dataclass(frozen=True)
class _Entry:
    """One run as the report shows it: its unique label, the run and its rounds."""

    label: str
    run: Run
    rounds: pd.DataFrame


class _Figures:
    """Turns figures into HTML, embedding plotly.js with the first one only (so the file opens offline)."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: go.Figure) -> str:
        self.count += 1
        return fig.to_html(full_html=False, include_plotlyjs=self.count == 1, default_height=FIGURE_HEIGHT,
                           default_width="100%", config={"displaylogo": False, "responsive": True})


# ----- public API -----

def run_report_html(run: Run, rounds: pd.DataFrame, *, other: tuple[Run, pd.DataFrame] | None = None) -> str:
    """The whole report as one HTML page: `run` alone, or `run` beside `other` (run, rounds)."""
    entries = _entries([(run, rounds), *([other] if other is not None else [])])
    colors = charts.distinct_colors([e.label for e in entries])
    figures = _Figures()
    sections = [
        ("settings", "Settings", _settings_section(entries)),
        ("curves", "Learning curves", _curves_section(entries, colors=colors, figures=figures)),
        ("metrics", "Final test metrics and baselines", _metrics_section(entries, colors=colors, figures=figures)),
        ("classes", "Per category", _classes_section(entries, colors=colors, figures=figures)),
        ("clients", "Per client", _clients_section(entries, colors=colors, figures=figures)),
        ("fairness", "Fairness: who is served well", _fairness_section(entries, colors=colors, figures=figures)),
        ("privacy", "Privacy budget", _privacy_section(entries)),
    ]
    return _page(entries, colors=colors, sections=[s for s in sections if s[2]])


def write_report(store: RunStore, run_ids: list[str], out: str | os.PathLike) -> Path:
    """Writes the report of one run (or a comparison of two) to `out`; unknown ids are a FedlabError."""
    if not 1 <= len(run_ids) <= 2:
        raise FedlabError(f"a report covers one run or compares two, not {len(run_ids)}")
    if len(set(run_ids)) != len(run_ids):
        raise FedlabError(f"run {run_ids[0]!r} is given twice; compare two different runs")
    loaded = [(_existing_run(store, run_id), store.rounds(run_id)) for run_id in run_ids]
    page = run_report_html(*loaded[0], other=loaded[1] if len(loaded) == 2 else None)
    return _write_text(Path(out), page)


def add_report_parser(sub) -> None:
    """Registers `fedlab report RUN_ID [RUN_ID2] --out FILE.html [--db PATH]` on the CLI's subparsers."""
    p = sub.add_parser("report", help="write a self-contained HTML report of one run, or compare two runs")
    p.add_argument("run_id", metavar="RUN_ID", help="id of the run (the Runs page lists them)")
    p.add_argument("other_id", metavar="RUN_ID2", nargs="?", help="a second run to compare with the first")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.html", help="where to write the report")
    p.add_argument("--db", type=Path, default=None, help="run store file (default: $FEDLAB_DB or runs/fedlab.db)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    path = args.db if args.db is not None else default_path()
    if not path.is_file():
        # RunStore() would create an empty store, and then report that the run is missing from it.
        raise FedlabError(f"no run store at {path}; pass --db PATH or set FEDLAB_DB")
    run_ids = [args.run_id] + ([args.other_id] if args.other_id else [])
    out = write_report(RunStore(path), run_ids, args.out)
    print(f"wrote {out}")
    return 0


# ----- sections (each returns HTML, or "" to leave the section out) -----

def _settings_section(entries: list[_Entry]) -> str:
    """Status and every setting; in a comparison the rows that differ are highlighted."""
    header = ["", *(e.label for e in entries)]
    facts = [("run id", [e.run.id for e in entries]), ("status", [e.run.status for e in entries]),
             ("created (UTC)", [_time(e.run.created_at) for e in entries]),
             ("finished (UTC)", [_time(e.run.finished_at) for e in entries])]
    errors = [e.run.error or "" for e in entries]
    if any(errors):
        facts.append(("error", errors))
    settings = [("feature set", [feature_label(e.run.config.features) for e in entries])]
    rows = [settings_rows(e.run.config) for e in entries]  # the same labels, in the same order, for every run
    settings += [(label, [r[i][1] for r in rows]) for i, (label, _) in enumerate(rows[0])]
    diff = len(entries) > 1
    body = "".join(_row([name, *values]) for name, values in facts)
    body += "".join(_row([name, *values], css="diff" if diff and len(set(values)) > 1 else "")
                    for name, values in settings)
    note = '<p class="note">Highlighted: settings that differ between the two runs.</p>' if diff else ""
    return f"<table>{_head(header)}<tbody>{body}</tbody></table>{note}"


def _curves_section(entries: list[_Entry], *, colors: dict[str, str], figures: _Figures) -> str:
    runs = {e.label: e.rounds for e in entries}
    if not any(len(r) for r in runs.values()):
        return '<p class="note">No round was recorded.</p>'
    most = max(e.run.config.rounds for e in entries)
    parts = [figures.html(charts.learning_curves(runs, metric, colors=colors, max_rounds=most))
             for metric in ("loss", "accuracy")]
    return _grid(parts) + _note("Dashed: training (average over the clients' local steps); solid: validation "
                                "(each client's held-out later check-ins). Accuracy is the share of next check-ins "
                                "whose category was predicted right.")


def _metrics_section(entries: list[_Entry], *, colors: dict[str, str], figures: _Figures) -> str:
    """A table of test metrics and baselines per run, then the accuracy bar chart against the baselines."""
    tested = [e for e in entries if e.run.test]
    if not tested:
        return _note("No test results: " + "; ".join(f"{e.label} is {e.run.status}" for e in entries) + ".")
    rows = metrics_table({e.label: e.run.test for e in tested}, {e.label: e.run.baselines for e in tested},
                         {e.label: e.rounds for e in tested})
    table = f"<table>{_head(['', *(e.label for e in tested)])}<tbody>"
    table += "".join(_row([name, *values], numeric=True) for name, values in rows.iterrows()) + "</tbody></table>"
    first = tested[0]
    fig = charts.metrics_vs_baselines({e.label: e.run.test["accuracy"] for e in tested}, first.run.baselines or {},
                                      colors=colors)
    caption = ("Baselines are simple predictors scored on exactly the same test targets as the model. A model "
               "that does not beat 'Repeat last category' or the Markov chains has learned little.")
    if len(tested) > 1:
        caption += f" The chart's grey bars are the baselines of {first.label}'s test data."
    untested = [e.label for e in entries if not e.run.test]
    if untested:
        caption += " No test results for " + ", ".join(untested) + "."
    return table + figures.html(fig) + _note(caption)


def _classes_section(entries: list[_Entry], *, colors: dict[str, str], figures: _Figures) -> str:
    reports = {e.label: e.run.test for e in entries if e.run.test and e.run.test.get("class_names")}
    if not reports:
        return ""
    recall = figures.html(charts.per_class_recall(reports, colors=colors))
    matrices = [figures.html(charts.confusion_heatmap(report, title=f"Confusion matrix: {label}"))
                for label, report in reports.items()]
    return (recall + _note("For each true category: the share of its test targets predicted right.")
            + _grid(matrices) + _note("Rows: the true category; columns: what the model predicted; each row sums "
                                      "to 100%. A strong diagonal is good; a bright column is a category the "
                                      "model guesses too often."))


def _clients_section(entries: list[_Entry], *, colors: dict[str, str], figures: _Figures) -> str:
    reports = {e.label: e.run.test for e in entries if e.run.test and e.run.test.get("per_client")}
    if not reports:
        return ""
    stats = {label: _client_spread(report["per_client"]) for label, report in reports.items()}
    names = list(next(iter(stats.values())))
    table = f"<table>{_head(['', *stats])}<tbody>"
    table += "".join(_row([name, *(s[name] for s in stats.values())], numeric=True) for name in names)
    table += "</tbody></table>"
    return (figures.html(charts.per_client_accuracy(reports, colors=colors)) + table
            + _note("Each client (one user) scored on its own test check-ins. A wide spread means the shared "
                    "model suits some people far better than others."))


def _client_spread(per_client: dict[str, dict[str, float]]) -> dict[str, str]:
    """Summary of the per-client test accuracies (clients with scored targets only)."""
    values = np.array([c["accuracy"] for c in per_client.values() if c.get("examples", 0) > 0], dtype=float)
    if not len(values):
        return {"clients scored": "0"}
    return {"clients scored": f"{len(values):,}", "mean": _pct(values.mean()), "median": _pct(np.median(values)),
            "10th percentile (worst served 10%)": _pct(np.percentile(values, 10)),
            "90th percentile": _pct(np.percentile(values, 90)),
            "lowest": _pct(values.min()), "highest": _pct(values.max())}


def _fairness_section(entries: list[_Entry], *, colors: dict[str, str], figures: _Figures) -> str:
    """Best and worst served clients with their check-in counts, and accuracy against data size."""
    tables = {e.label: client_table(e.run.test["per_client"]) for e in entries
              if e.run.test and e.run.test.get("per_client")}
    if not tables:
        return ""
    parts = []
    for label, table in tables.items():
        best, worst = best_and_worst(table, count=FAIRNESS_CLIENTS)
        parts.append(f"<h3>{_e(label)}</h3>" + _client_rows("Best served", best) + _client_rows("Worst served", worst)
                     + _note(correlation_text(table)))
    scatter = charts.accuracy_vs_checkins(tables, colors=colors)
    return (_grid(parts) + figures.html(scatter)
            + _note("Each dot is one client. Check-ins count all of the client's check-ins (train, validation and "
                    "test). If the dots climb to the right, users with little data are served worse."))


def _privacy_section(entries: list[_Entry]) -> str:
    """(epsilon, delta) per DP run; left out when no run used differential privacy."""
    if not any(e.run.config.dp_clip is not None for e in entries):
        return ""
    budgets = [_privacy_rows(e) for e in entries]
    names = list(budgets[next(i for i, e in enumerate(entries) if e.run.config.dp_clip is not None)])
    table = f"<table>{_head(['', *(e.label for e in entries)])}<tbody>"
    table += "".join(_row([name, *(b.get(name, '—') for b in budgets)], numeric=True) for name in names)
    table += "</tbody></table>"
    return table + _note(
        "User-level differential privacy: (ε, δ) bounds how much the final model can reveal about any one user "
        "and all of their check-ins. Smaller ε is more private; ε above about 10 promises little. Computed with "
        "Google's dp_accounting (RDP accountant), each round taken as Poisson sampling of clients at the rate "
        "shown with Gaussian noise; δ = 1 / (clients^1.1). Client dropout is not counted, so the real ε is at "
        "most the one shown.")


def _privacy_rows(entry: _Entry) -> dict[str, str]:
    """Display rows of one run's DP settings and budget; a run without DP gets a single row saying so."""
    config = entry.run.config
    if config.dp_clip is None:
        return {"DP": "off (no formal guarantee)"}
    population = _population(entry)
    rounds = len(entry.rounds)
    rows = {"DP": "on", "clipping norm": _num(config.dp_clip), "noise multiplier": _num(config.dp_noise),
            "clients per round": "all" if config.clients_per_round is None else str(config.clients_per_round),
            "clients in the population": "unknown" if population is None else f"{population:,}",
            "rounds trained": str(rounds)}
    if population is None:
        return {**rows, "sampling rate": "—", "ε (epsilon)": "unknown", "δ (delta)": "—"}
    budget = dp_epsilon(noise_multiplier=float(config.dp_noise), clients_per_round=config.clients_per_round,
                        total_clients=population, rounds=rounds)
    rate = sampling_rate(clients_per_round=config.clients_per_round, total_clients=population)
    return {**rows, "sampling rate": _pct(rate), "ε (epsilon)": _epsilon(budget.epsilon),
            "δ (delta)": f"{budget.delta:.2e}"}


def _population(entry: _Entry) -> int | None:
    """Clients the rounds sample from: the engine's summary if it says, else the clients with test results."""
    for key in ("train_clients", "clients"):
        value = entry.run.extra.get(key)
        if isinstance(value, int) and value > 0:
            return value
    per_client = (entry.run.test or {}).get("per_client") or {}
    return len(per_client) or None


# ----- page -----

def _page(entries: list[_Entry], *, colors: dict[str, str], sections: list[tuple[str, str, str]]) -> str:
    title = " vs ".join(e.label for e in entries)
    legend = " ".join(f'<span class="dot" style="color:{colors[e.label]}">●</span> <b>{_e(e.label)}</b> '
                      f'<span class="meta">({_e(e.run.id)}, {_e(e.run.status)})</span>' for e in entries)
    nav = "".join(f'<a href="#{anchor}">{_e(name)}</a>' for anchor, name, _ in sections)
    body = "".join(f'<section id="{anchor}"><h2>{_e(name)}</h2>{content}</section>'
                   for anchor, name, content in sections)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>fedlab report: {_e(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>fedlab report: {_e(title)}</h1><p>{legend}</p>"
            f'<p class="meta">Next check-in category prediction (GRU) trained with federated averaging; '
            f"each user is one client. Generated {generated}.</p><nav>{nav}</nav>{body}</body></html>\n")


def _entries(pairs: list[tuple[Run, pd.DataFrame]]) -> list[_Entry]:
    """Labels unique within the report: the run name, plus a short id where two names are equal."""
    names = [run.name for run, _ in pairs]
    return [_Entry(label=run.name if names.count(run.name) == 1 else f"{run.name} [{run.id[:6]}]", run=run,
                   rounds=rounds) for run, rounds in pairs]


def _existing_run(store: RunStore, run_id: str) -> Run:
    run = store.get_run(run_id)
    if run is None:
        raise FedlabError(f"no run with id {run_id!r} in {store.path}; the Runs page lists every run's id")
    return run


def _write_text(out: Path, text: str) -> Path:
    # Written beside the target and renamed, so a half-written report never replaces a good one.
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(out)
    return out


# ----- small HTML and formatting helpers -----

def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _head(cells: list[str]) -> str:
    return "<thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in cells) + "</tr></thead>"


def _row(cells: list[str], *, css: str = "", numeric: bool = False) -> str:
    first, *rest = cells
    value_class = ' class="num"' if numeric else ""
    cls = f' class="{css}"' if css else ""
    return f"<tr{cls}><th>{_e(first)}</th>" + "".join(f"<td{value_class}>{_e(c)}</td>" for c in rest) + "</tr>"


def _client_rows(title: str, table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    body = "".join(f"<tr><td>{_e(r.client)}</td><td class=\"num\">{_e(_pct(r.accuracy))}</td>"
                   f"<td class=\"num\">{r.examples:,}</td><td class=\"num\">{r.checkins:,}</td></tr>"
                   for r in table.itertuples(index=False))
    return (f"<table><caption>{_e(title)}</caption>{_head(['client', 'test accuracy', 'targets', 'check-ins'])}"
            f"<tbody>{body}</tbody></table>")


def _grid(parts: list[str]) -> str:
    return '<div class="grid">' + "".join(f"<div>{p}</div>" for p in parts) + "</div>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _time(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _epsilon(value: float) -> str:
    return "∞ (no noise: no guarantee)" if math.isinf(value) else f"{value:.2f}"


_pct, _num = pct, num  # the metrics table's formats, for the other tables of the report
