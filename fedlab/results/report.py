"""A self-contained HTML report of one run, or of two runs side by side, for a classroom or a meeting.

One file that opens offline: plotly.js is embedded once (with the first figure), every chart is
interactive, every figure comes from fedlab.results.charts and the fairness tables from fedlab.results.fairness.
Sections: settings, learning curves, final metrics with baselines, per-category results and confusion
matrices, per-client accuracy, fairness (best and worst served clients; accuracy against data
size), when a run had malicious clients or a defence what they did beside its clean reference, and, when a run used
differential privacy, its privacy budget.

The page is the Jinja2 template templates/report.html.j2, autoescaped: everything a person typed (run
names, client ids, error messages, file names) is HTML-escaped. This module prepares plain values for it.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from markupsafe import Markup

from fedlab.errors import FedlabError
from fedlab.results import attack_view, charts
from fedlab.results.fairness import FAIRNESS_CLIENTS, best_and_worst, client_table, correlation_text
from fedlab.results.importance import importance_table, importance_text
from fedlab.results.metrics_table import metrics_table, num, pct
from fedlab.results.privacy import dp_epsilon, sampling_rate
from fedlab.results.settings_text import settings_rows
from fedlab.runs.store import Run, RunStore, default_path, feature_label

TEMPLATE = "report.html.j2"  # in fedlab/results/templates
FIGURE_HEIGHT = "460px"  # figures that set no height of their own


@dataclass(frozen=True)
class _Entry:
    """One run as the report shows it: its unique label, the run and its rounds."""

    label: str
    run: Run
    rounds: pd.DataFrame


@dataclass(frozen=True)
class _Row:
    name: str
    values: list[str]
    diff: bool = False  # highlighted: a setting that differs between the two runs


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[_Row]
    numeric: bool = False  # values right-aligned


@dataclass
class _Figures:
    """The template's `figure` filter: plotly.js is embedded with the page's first figure only, so the file opens
    offline and the library comes before any chart that uses it."""

    count: int = 0

    def html(self, fig: go.Figure) -> Markup:
        self.count += 1
        return Markup(
            fig.to_html(
                full_html=False,
                include_plotlyjs=self.count == 1,
                default_height=FIGURE_HEIGHT,
                default_width="100%",
                config={"displaylogo": False, "responsive": True},
            )
        )


# ----- public API -----


def run_report_html(
    run: Run,
    rounds: pd.DataFrame,
    *,
    other: tuple[Run, pd.DataFrame] | None = None,
    clean: Mapping[str, Run | None] | None = None,
) -> str:
    """The whole report as one HTML page: `run` alone, or `run` beside `other` (run, rounds). `clean` maps a run
    id to its stored clean reference (fedlab.results.attack_view; see store_report_html), for runs under attack or
    defended."""
    entries = _entries([(run, rounds), *([other] if other is not None else [])])
    colors = charts.distinct_colors([e.label for e in entries])
    # label -> the clean reference (None: not stored) of each run that has one to be measured against
    references = {
        e.label: (clean or {}).get(e.run.id) for e in entries if attack_view.attacked_or_defended(e.run.config)
    }
    sections = {
        "settings": _settings_section(entries),
        "curves": _curves_section(entries, colors),
        "metrics": _metrics_section(entries, colors, references),
        "attack": _attack_section(entries, colors, references),
        "importance": _importance_section(entries, colors),
        "classes": _classes_section(entries, colors),
        "clients": _clients_section(entries, colors),
        "fairness": _fairness_section(entries, colors),
        "privacy": _privacy_section(entries),
    }
    legend = [{"label": e.label, "color": colors[e.label], "id": e.run.id, "status": e.run.status} for e in entries]
    return _render(
        title=" vs ".join(e.label for e in entries),
        legend=legend,
        sections={anchor: values for anchor, values in sections.items() if values is not None},
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def store_report_html(store: RunStore, run_ids: list[str]) -> str:
    """The report of one stored run (or a comparison of two), with the clean references the store holds for them;
    unknown ids are a FedlabError."""
    if not 1 <= len(run_ids) <= 2:
        raise FedlabError(f"a report covers one run or compares two, not {len(run_ids)}")
    if len(set(run_ids)) != len(run_ids):
        raise FedlabError(f"run {run_ids[0]!r} is given twice; compare two different runs")
    loaded = [(_existing_run(store, run_id), store.rounds(run_id)) for run_id in run_ids]
    clean = {
        run.id: attack_view.clean_reference(store, run.config)
        for run, _ in loaded
        if attack_view.attacked_or_defended(run.config)
    }
    return run_report_html(*loaded[0], other=loaded[1] if len(loaded) == 2 else None, clean=clean)


def write_report(store: RunStore, run_ids: list[str], out: str | os.PathLike) -> Path:
    """Writes the report of one run (or a comparison of two) to `out`; unknown ids are a FedlabError."""
    return _write_text(Path(out), store_report_html(store, run_ids))


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


# ----- sections: the values each section of the template shows, or None to leave the section out -----


def _settings_section(entries: list[_Entry]) -> dict[str, Any]:
    """Status and every setting; in a comparison the settings that differ are highlighted (run ids are not)."""
    facts = [
        ("run id", [e.run.id for e in entries]),
        ("status", [e.run.status for e in entries]),
        ("created (UTC)", [_time(e.run.created_at) for e in entries]),
        ("finished (UTC)", [_time(e.run.finished_at) for e in entries]),
    ]
    if any(e.run.config.mode == "federated" for e in entries):
        facts.append(("training path", [recorded_training_path(e.run.extra) for e in entries]))
    errors = [e.run.error or "" for e in entries]
    if any(errors):
        facts.append(("error", errors))
    settings = [("feature set", [feature_label(e.run.config.features) for e in entries])]
    rows = [settings_rows(e.run.config) for e in entries]  # the same labels, in the same order, for every run
    settings += [(label, [r[i][1] for r in rows]) for i, (label, _) in enumerate(rows[0])]
    compare = len(entries) > 1
    table = _Table(
        _header(entries),
        [_Row(name, values) for name, values in facts]
        + [_Row(name, values, diff=compare and len(set(values)) > 1) for name, values in settings],
    )
    return {"table": table, "compare": compare}


def recorded_training_path(extra: dict) -> str:
    """How a run's rounds trained, as its record says, e.g. "per user: DP clips each user's update"."""
    if "training_path" not in extra:
        return "not recorded"
    return f"{extra['training_path']}: {extra.get('training_path_reason', '')}".rstrip(": ")


def _curves_section(entries: list[_Entry], colors: dict[str, str]) -> dict[str, Any]:
    runs = {e.label: e.rounds for e in entries}
    if not any(len(r) for r in runs.values()):
        return {"figures": []}
    most = max(e.run.config.rounds for e in entries)
    figures = [charts.learning_curves(runs, metric, colors=colors, max_rounds=most) for metric in ("loss", "accuracy")]
    if charts.sends_bytes(runs):
        figures += [charts.megabytes_per_round(runs, colors=colors), charts.accuracy_vs_megabytes(runs, colors=colors)]
    return {"figures": figures}


def _metrics_section(
    entries: list[_Entry], colors: dict[str, str], references: Mapping[str, Run | None]
) -> dict[str, Any]:
    """Test metrics and baselines per run, and the accuracy bar chart against the first tested run's baselines."""
    tested = [e for e in entries if e.run.test]
    if not tested:
        return {"table": None, "statuses": [(e.label, e.run.status) for e in entries]}
    rows = metrics_table(
        {e.label: e.run.test for e in tested},
        {e.label: e.run.baselines for e in tested},
        {e.label: e.rounds for e in tested},
        configs={e.label: e.run.config for e in tested},
        clean={label: ref.test for label, ref in references.items() if ref is not None},
    )
    first = tested[0]
    return {
        "table": _Table(_header(tested), [_Row(name, list(values)) for name, values in rows.iterrows()], numeric=True),
        "figure": charts.metrics_vs_baselines(
            {e.label: e.run.test["accuracy"] for e in tested}, first.run.baselines or {}, colors=colors
        ),
        "baselines_of": first.label if len(tested) > 1 else None,
        "untested": [e.label for e in entries if not e.run.test],
    }


def _attack_section(
    entries: list[_Entry], colors: dict[str, str], references: Mapping[str, Run | None]
) -> dict[str, Any] | None:
    """Accuracy for all and for the honest clients beside the clean reference, the targeted attack's success, and
    what the defence did per round; left out when no run had malicious clients or a defence."""
    if not references:
        return None
    by_label = {e.label: e for e in entries}
    figures = {
        label: attack_view.attack_figures(by_label[label].run.test, ref.test if ref else None)
        for label, ref in references.items()
        if by_label[label].run.test
    }
    charts_shown = [charts.attack_accuracy(figures, colors=colors)] if figures else []
    if any(attack_view.SUCCESS in frame.index for frame in figures.values()):
        charts_shown.append(charts.targeted_success(figures, colors=colors))
    defended = {e.label: e.rounds for e in entries if e.run.config.defense != "none" and len(e.rounds)}
    if defended:
        charts_shown.append(charts.defence_counts(defended, colors=colors))
    return {
        "figures": charts_shown,
        "references": [(label, ref.name, ref.id) for label, ref in references.items() if ref is not None],
        "missing": [label for label, ref in references.items() if ref is None],
    }


def _importance_section(entries: list[_Entry], colors: dict[str, str]) -> dict[str, Any] | None:
    """Permutation importance of each run's kept model, and the share of clients each feature helps."""
    tables = {e.label: importance_table((e.run.test or {}).get("importance")) for e in entries}
    tables = {label: table for label, table in tables.items() if not table.empty}
    if not tables:
        return None
    return {
        "figure": charts.feature_importance(tables, colors=colors),
        "helped": charts.feature_helped(tables, colors=colors),
        "texts": [f"{label}: {importance_text(table)}".replace("**", "") for label, table in tables.items()],
    }


def _classes_section(entries: list[_Entry], colors: dict[str, str]) -> dict[str, Any] | None:
    reports = {e.label: e.run.test for e in entries if e.run.test and e.run.test.get("class_names")}
    if not reports:
        return None
    return {
        "recall": charts.per_class_recall(reports, colors=colors),
        "matrices": [
            charts.confusion_heatmap(report, title=f"Confusion matrix: {label}") for label, report in reports.items()
        ],
    }


def _clients_section(entries: list[_Entry], colors: dict[str, str]) -> dict[str, Any] | None:
    reports = {e.label: e.run.test for e in entries if e.run.test and e.run.test.get("per_client")}
    if not reports:
        return None
    stats = {label: _client_spread(report["per_client"]) for label, report in reports.items()}
    names = list(next(iter(stats.values())))
    return {
        "figure": charts.per_client_accuracy(reports, colors=colors),
        "table": _Table(["", *stats], [_Row(name, [s[name] for s in stats.values()]) for name in names], numeric=True),
    }


def _client_spread(per_client: dict[str, dict[str, float]]) -> dict[str, str]:
    """Summary of the per-client test accuracies (clients with scored targets only)."""
    values = np.array([c["accuracy"] for c in per_client.values() if c.get("examples", 0) > 0], dtype=float)
    if not len(values):
        return {"clients scored": "0"}
    return {
        "clients scored": f"{len(values):,}",
        "mean": pct(values.mean()),
        "median": pct(np.median(values)),
        "10th percentile (worst served 10%)": pct(np.percentile(values, 10)),
        "90th percentile": pct(np.percentile(values, 90)),
        "lowest": pct(values.min()),
        "highest": pct(values.max()),
    }


def _fairness_section(entries: list[_Entry], colors: dict[str, str]) -> dict[str, Any] | None:
    """Best and worst served clients with their check-in counts, and accuracy against data size."""
    tables = {
        e.label: client_table(e.run.test["per_client"]) for e in entries if e.run.test and e.run.test.get("per_client")
    }
    if not tables:
        return None
    runs = []
    for label, table in tables.items():
        best, worst = best_and_worst(table, count=FAIRNESS_CLIENTS)
        runs.append(
            {
                "label": label,
                "best": _client_rows(best),
                "worst": _client_rows(worst),
                "correlation": correlation_text(table),
            }
        )
    return {"runs": runs, "scatter": charts.accuracy_vs_checkins(tables, colors=colors)}


def _client_rows(table: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(client, test accuracy, targets, check-ins) as displayed."""
    return [
        (str(r.client), pct(r.accuracy), f"{r.examples:,}", f"{r.checkins:,}") for r in table.itertuples(index=False)
    ]


def _privacy_section(entries: list[_Entry]) -> dict[str, Any] | None:
    """(epsilon, delta) per DP run; left out when no run used differential privacy."""
    if not any(e.run.config.dp_clip is not None for e in entries):
        return None
    budgets = [_privacy_rows(e) for e in entries]
    names = list(budgets[next(i for i, e in enumerate(entries) if e.run.config.dp_clip is not None)])
    return {
        "table": _Table(
            _header(entries), [_Row(name, [b.get(name, "—") for b in budgets]) for name in names], numeric=True
        )
    }


def _privacy_rows(entry: _Entry) -> dict[str, str]:
    """Display rows of one run's DP settings and budget; a run without DP gets a single row saying so."""
    config = entry.run.config
    if config.dp_clip is None:
        return {"DP": "off (no formal guarantee)"}
    population = _population(entry)
    rounds = len(entry.rounds)
    rows = {
        "DP": "on",
        "clipping norm": num(config.dp_clip),
        "noise multiplier": num(config.dp_noise),
        "clients per round": "all" if config.clients_per_round is None else str(config.clients_per_round),
        "clients in the population": "unknown" if population is None else f"{population:,}",
        "rounds trained": str(rounds),
    }
    if population is None:
        return {**rows, "sampling rate": "—", "ε (epsilon)": "unknown", "δ (delta)": "—"}
    budget = dp_epsilon(
        noise_multiplier=float(config.dp_noise),
        clients_per_round=config.clients_per_round,
        total_clients=population,
        rounds=rounds,
    )
    rate = sampling_rate(clients_per_round=config.clients_per_round, total_clients=population)
    return {
        **rows,
        "sampling rate": pct(rate),
        "ε (epsilon)": _epsilon(budget.epsilon),
        "δ (delta)": f"{budget.delta:.2e}",
    }


def _population(entry: _Entry) -> int | None:
    """Clients the rounds sample from: the engine's summary if it says, else the clients with test results."""
    for key in ("train_clients", "clients"):
        value = entry.run.extra.get(key)
        if isinstance(value, int) and value > 0:
            return value
    per_client = (entry.run.test or {}).get("per_client") or {}
    return len(per_client) or None


# ----- page and files -----


def _render(**values: Any) -> str:
    # A fresh environment per page: the figure filter counts the figures of this page only.
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fedlab.results", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["figure"] = _Figures().html
    return env.get_template(TEMPLATE).render(**values)


def _entries(pairs: list[tuple[Run, pd.DataFrame]]) -> list[_Entry]:
    """Labels unique within the report: the run name, plus a short id where two names are equal."""
    names = [run.name for run, _ in pairs]
    return [
        _Entry(label=run.name if names.count(run.name) == 1 else f"{run.name} [{run.id[:6]}]", run=run, rounds=rounds)
        for run, rounds in pairs
    ]


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


# ----- formats -----


def _header(entries: list[_Entry]) -> list[str]:
    return ["", *(e.label for e in entries)]


def _time(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _epsilon(value: float) -> str:
    return "∞ (no noise: no guarantee)" if math.isinf(value) else f"{value:.2f}"
