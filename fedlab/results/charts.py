"""Plotly figures for the dashboard: tables in, figures out (no Streamlit here).

Conventions every figure follows:
- every axis says what it measures and in which unit;
- one colour per run or model across all figures (`color_for` / `distinct_colors`): the study's
  "central" feature set is blue, "biggest" orange, anything else takes a fixed palette colour;
- baselines are grey, and a pinned reference run is drawn faint behind the others;
- nothing needs the network (the map is a plain longitude/latitude scatter, no map tiles).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from fedlab.results.attack_view import ALL, HONEST, SUCCESS
from fedlab.results.baselines import BASELINE_LABELS

CENTRAL_COLOR = "#2563eb"  # blue; also the app theme's primary colour
BIGGEST_COLOR = "#f97316"  # orange
# Colours for other runs, picked by a stable hash of the label; no grey, which means "baseline".
PALETTE = ("#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777", "#4f46e5", "#65a30d", "#0d9488")
BASELINE_COLOR = "#9ca3af"
KEY_COLOR = "#6b7280"  # legend entries that explain line styles
REFERENCE_OPACITY = 0.3
TEMPLATE = "plotly_white"

ROUND_AXIS = "round"
LOSS_AXIS = "cross-entropy loss (nats)"
ACCURACY_AXIS = "accuracy"
_CURVE_COLUMNS = {
    "loss": ("train_loss", "val_loss", LOSS_AXIS),
    "accuracy": ("train_accuracy", "val_accuracy", ACCURACY_AXIS),
}
MAP_GROUPS = 10  # groups with their own colour on the map; the rest share one grey
CLIENT_BINS = 20  # 5%-wide accuracy bins for the per-client chart
USER_BINS = 25  # bins of the check-ins-per-user histogram


# ----- colours -----


def color_for(label: str) -> str:
    """The colour of a run or model: central blue, biggest orange, others from PALETTE (stable)."""
    key = str(label).strip().lower()
    if key.startswith("central"):
        return CENTRAL_COLOR
    if key.startswith("biggest"):
        return BIGGEST_COLOR
    digest = hashlib.sha256(key.encode("utf-8")).digest()  # not hash(): that changes per process
    return PALETTE[int.from_bytes(digest[:4], "big") % len(PALETTE)]


def distinct_colors(labels) -> dict[str, str]:
    """color_for each label, moving later labels to unused palette colours when two would clash."""
    out: dict[str, str] = {}
    for label in labels:
        color = color_for(label)
        if color in out.values():
            color = next((c for c in (*PALETTE, CENTRAL_COLOR, BIGGEST_COLOR) if c not in out.values()), color)
        out[label] = color
    return out


# ----- training -----


def learning_curves(
    runs: Mapping[str, pd.DataFrame],
    metric: str,
    *,
    reference: tuple[str, pd.DataFrame] | None = None,
    colors: Mapping[str, str] | None = None,
    max_rounds: int | None = None,
) -> go.Figure:
    """Per-round loss or accuracy of one or more runs on shared axes.

    `runs` maps a label to a rounds table (fedlab.runs.store.RunStore.rounds). Training is dashed,
    validation solid, both in the run's colour; `reference` (label, rounds) is drawn faint first.
    """
    if metric not in _CURVE_COLUMNS:
        raise ValueError(f"metric must be 'loss' or 'accuracy', not {metric!r}")
    train_column, val_column, y_title = _CURVE_COLUMNS[metric]
    colors = dict(colors or distinct_colors(runs))
    fig = go.Figure()
    if reference is not None:
        label, rounds = reference
        _add_curve_pair(
            fig,
            f"reference: {label}",
            rounds,
            train_column,
            val_column,
            color=colors.get(label, color_for(label)),
            opacity=REFERENCE_OPACITY,
        )
    for label, rounds in runs.items():
        _add_curve_pair(fig, label, rounds, train_column, val_column, color=colors.get(label, color_for(label)))
    if fig.data:
        _add_line_key(fig)
    title = "Loss per round (lower is better)" if metric == "loss" else "Accuracy per round (higher is better)"
    _layout(fig, title=title, x_title=ROUND_AXIS, y_title=y_title)
    if max_rounds:
        fig.update_xaxes(range=[0.5, max_rounds + 0.5])
    if (max_rounds or _most_rounds(runs)) <= 20:
        fig.update_xaxes(tickmode="linear", tick0=1, dtick=1)  # whole rounds only
    if metric == "accuracy":
        fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return fig


def _most_rounds(runs: Mapping[str, pd.DataFrame]) -> int:
    return max((len(rounds) for rounds in runs.values()), default=0)


def _add_curve_pair(
    fig: go.Figure,
    label: str,
    rounds: pd.DataFrame,
    train_column: str,
    val_column: str,
    *,
    color: str,
    opacity: float = 1.0,
) -> None:
    # The legend names each run once (its solid validation line); _add_line_key explains the dashes.
    for column, split, dash in ((train_column, "train", "dash"), (val_column, "validation", "solid")):
        fig.add_trace(
            go.Scatter(
                x=rounds["round"],
                y=rounds[column],
                name=label if split == "validation" else f"{label} · train",
                legendgroup=label,
                showlegend=split == "validation",
                mode="lines+markers",
                line={"color": color, "dash": dash, "width": 2},
                marker={"size": 6},
                opacity=opacity,
                hovertemplate=f"{label} · {split}<br>round %{{x}}: %{{y:.4f}}<extra></extra>",
            )
        )


def _add_line_key(fig: go.Figure) -> None:
    """Two grey legend entries saying which line style is training and which validation."""
    for name, dash in (("training (dashed)", "dash"), ("validation (solid)", "solid")):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                name=name,
                hoverinfo="skip",
                line={"color": KEY_COLOR, "dash": dash, "width": 2},
            )
        )


# ----- communication -----

MEGABYTE_AXIS = "megabytes sent (down + up, cumulative)"


def cumulative_megabytes(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per round: megabytes sent down, up and in all so far (from a rounds table's bytes columns)."""
    out = pd.DataFrame({"round": rounds["round"]})
    for name, column in (("down", "bytes_down"), ("up", "bytes_up")):
        values = rounds[column] if column in rounds else pd.Series(0, index=rounds.index)
        out[name] = values.astype(float).cumsum() / 1e6
    out["total"] = out["down"] + out["up"]
    return out


def _sends_bytes(rounds: pd.DataFrame) -> bool:
    return len(rounds) > 0 and cumulative_megabytes(rounds)["total"].iloc[-1] > 0


def megabytes_per_round(runs: Mapping[str, pd.DataFrame], *, colors: Mapping[str, str] | None = None) -> go.Figure:
    """Cumulative megabytes sent down (dotted) and up (solid) per round, for runs that sent any (federated)."""
    colors = dict(colors or distinct_colors(runs))
    fig = go.Figure()
    for label, rounds in runs.items():
        if not _sends_bytes(rounds):
            continue
        sent = cumulative_megabytes(rounds)
        for column, dash in (("up", "solid"), ("down", "dot")):
            fig.add_trace(
                go.Scatter(
                    x=sent["round"],
                    y=sent[column],
                    name=label if column == "up" else f"{label} · down",
                    legendgroup=label,
                    showlegend=column == "up",
                    mode="lines+markers",
                    line={"color": colors.get(label, color_for(label)), "dash": dash, "width": 2},
                    marker={"size": 5},
                    hovertemplate=f"{label} · {column}<br>round %{{x}}: %{{y:.3f}} MB<extra></extra>",
                )
            )
    _layout(
        fig,
        title="Megabytes sent so far (solid: up, dotted: down)",
        x_title=ROUND_AXIS,
        y_title="megabytes (cumulative)",
    )
    fig.update_yaxes(rangemode="tozero")
    return fig


def accuracy_vs_megabytes(runs: Mapping[str, pd.DataFrame], *, colors: Mapping[str, str] | None = None) -> go.Figure:
    """Validation accuracy against the megabytes sent so far: which setting learns most per byte."""
    colors = dict(colors or distinct_colors(runs))
    fig = go.Figure()
    for label, rounds in runs.items():
        if not _sends_bytes(rounds):
            continue
        sent = cumulative_megabytes(rounds)
        fig.add_trace(
            go.Scatter(
                x=sent["total"],
                y=rounds["val_accuracy"],
                name=label,
                mode="lines+markers",
                line={"color": colors.get(label, color_for(label)), "width": 2},
                marker={"size": 6},
                customdata=rounds["round"],
                hovertemplate=f"{label}<br>round %{{customdata}}: %{{y:.1%}} after %{{x:.3f}} MB<extra></extra>",
            )
        )
    _layout(
        fig,
        title="Validation accuracy per megabyte sent (higher and further left is better)",
        x_title=MEGABYTE_AXIS,
        y_title=ACCURACY_AXIS,
    )
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    fig.update_xaxes(rangemode="tozero")
    return fig


def sends_bytes(runs: Mapping[str, pd.DataFrame]) -> bool:
    """Whether any of these runs sent bytes (federated runs measured them), so the communication charts apply."""
    return any(_sends_bytes(rounds) for rounds in runs.values())


# ----- attacks and defences -----


def defence_counts(runs: Mapping[str, pd.DataFrame], *, colors: Mapping[str, str] | None = None) -> go.Figure:
    """Per round, the updates each run's defence clipped (solid) and zeroed (dotted), and faint the updates it
    averaged, for scale. `runs` maps a label to a rounds table (with the store's clipped and zeroed columns)."""
    colors = dict(colors or distinct_colors(runs))
    fig, most = go.Figure(), 0
    for label, rounds in runs.items():
        color = colors.get(label, color_for(label))
        lines = (("clipped", "solid", 1.0), ("zeroed", "dot", 1.0), ("clients", "dash", REFERENCE_OPACITY))
        for column, dash, opacity in lines:
            values = rounds[column] if column in rounds else pd.Series(0, index=rounds.index)
            most = max(most, int(values.max()) if len(values) else 0)
            what = "updates averaged" if column == "clients" else f"updates {column}"
            fig.add_trace(
                go.Scatter(
                    x=rounds["round"],
                    y=values,
                    name=label if column == "clipped" else f"{label} · {what}",
                    legendgroup=label,
                    mode="lines+markers",
                    line={"color": color, "dash": dash, "width": 2},
                    marker={"size": 6},
                    opacity=opacity,
                    hovertemplate=f"{label}<br>round %{{x}}: %{{y}} {what}<extra></extra>",
                )
            )
    _layout(
        fig,
        title="What the defence did per round (solid: clipped, dotted: zeroed, faint: all updates averaged)",
        x_title=ROUND_AXIS,
        y_title="client updates (count)",
    )
    fig.update_yaxes(rangemode="tozero", dtick=max(1, math.ceil(most / 6)))  # whole updates only
    if _most_rounds(runs) <= 20:
        fig.update_xaxes(tickmode="linear", tick0=1, dtick=1)
    return fig


def attack_accuracy(figures: Mapping[str, pd.DataFrame], *, colors: Mapping[str, str] | None = None) -> go.Figure:
    """Test acc@1 of each attacked or defended run, for all clients and for the honest ones, beside its clean
    reference's on the same clients (faint). `figures` maps a label to fedlab.results.attack_view.attack_figures."""
    fig = _attack_bars(figures, (ALL, HONEST), colors)
    _layout(
        fig,
        title="Test accuracy under attack, beside the clean reference (faint) on the same clients",
        x_title="clients scored",
        y_title="test accuracy (acc@1)",
    )
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return fig


def targeted_success(figures: Mapping[str, pd.DataFrame], *, colors: Mapping[str, str] | None = None) -> go.Figure:
    """The targeted attack's success: the share of true-A test targets predicted B, beside the clean reference's
    (faint), which shows how often the model says B for A without any attack (lower is better)."""
    fig = _attack_bars(figures, (SUCCESS,), colors)
    _layout(
        fig,
        title="Targeted attack: true A predicted as B (lower is better), beside the clean reference (faint)",
        x_title="class pair (true → predicted)",
        y_title="share of true-A test targets",
    )
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return fig


def _attack_bars(
    figures: Mapping[str, pd.DataFrame], rows: tuple[str, ...], colors: Mapping[str, str] | None
) -> go.Figure:
    """Grouped bars of these rows: per run one trace of its values, and one faint of its clean reference's."""
    colors = dict(colors or distinct_colors(figures))
    fig = go.Figure()
    for label, frame in figures.items():
        shown = frame.loc[[row for row in rows if row in frame.index]]
        if shown.empty:
            continue
        color = colors.get(label, color_for(label))
        for column, name, opacity in (("run", label, 1.0), ("clean", f"{label} · clean reference", REFERENCE_OPACITY)):
            values = shown[column].astype(float)
            if values.isna().all():
                continue  # no clean reference stored: its bars are left out, not drawn at 0
            fig.add_trace(
                go.Bar(
                    x=shown["label"],
                    y=values,
                    name=name,
                    marker={"color": color, "line": {"color": color, "width": 1.5}},
                    opacity=opacity,
                    text=["" if pd.isna(v) else f"{v:.1%}" for v in values],
                    textposition="outside",
                    cliponaxis=False,
                    hovertemplate=f"{name}<br>%{{x}}: %{{y:.1%}}<extra></extra>",
                )
            )
    fig.update_layout(barmode="group")
    return fig


# ----- results -----


def metrics_vs_baselines(
    models: Mapping[str, float], baselines: Mapping[str, float], *, colors: Mapping[str, str] | None = None
) -> go.Figure:
    """Test accuracy (acc@1) of each model (coloured bars, on top) and the baselines (grey bars), values shown.

    Baseline keys from fedlab.results.baselines.BASELINE_LABELS are shown by their labels.
    """
    colors = dict(colors or distinct_colors(models))
    names = [*models, *(BASELINE_LABELS.get(k, k) for k in baselines)]
    values = [*models.values(), *baselines.values()]
    bar_colors = [colors.get(m, color_for(m)) for m in models] + [BASELINE_COLOR] * len(baselines)
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=bar_colors,
            text=[f"{v:.1%}" for v in values],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
            showlegend=False,
        )
    )
    _layout(
        fig,
        title="Test accuracy: model vs simple baselines (grey)",
        x_title="test accuracy (acc@1)",
        y_title="predictor",
        legend=False,
    )
    fig.update_xaxes(tickformat=".0%", range=[0, min(1.0, max(values, default=0) * 1.2 + 0.05)])
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(height=120 + 34 * len(names))
    return fig


def per_class_recall(reports: Mapping[str, Mapping], *, colors: Mapping[str, str] | None = None) -> go.Figure:
    """Per-class accuracy (recall: share of each true class predicted right) of one or more test reports.

    Classes are ordered by their test support in the first report, most common first.
    """
    colors = dict(colors or distinct_colors(reports))
    order = _classes_by_support(next(iter(reports.values()), {}))
    fig = go.Figure()
    for label, report in reports.items():
        per_class = report.get("per_class") or {}
        fig.add_trace(
            go.Bar(
                x=order,
                y=[per_class.get(c, {}).get("recall", 0.0) for c in order],
                name=label,
                marker_color=colors.get(label, color_for(label)),
                customdata=[per_class.get(c, {}).get("support", 0) for c in order],
                hovertemplate=f"{label}<br>%{{x}}: %{{y:.1%}} of %{{customdata}} targets<extra></extra>",
            )
        )
    _layout(
        fig,
        title="Accuracy per true category (recall)",
        x_title="true category (most common first)",
        y_title="recall (share predicted right)",
    )
    fig.update_layout(barmode="group")
    fig.update_yaxes(tickformat=".0%", range=[0, 1])
    return fig


def _classes_by_support(report: Mapping) -> list[str]:
    per_class = report.get("per_class") or {}
    names = list(report.get("class_names") or per_class)
    return sorted(names, key=lambda c: -per_class.get(c, {}).get("support", 0))


def confusion_heatmap(report: Mapping, *, title: str = "Confusion matrix") -> go.Figure:
    """Row-normalised confusion matrix: each row shows where one true class's targets were predicted."""
    names = list(report.get("class_names") or [])
    counts = np.asarray(report.get("confusion") or np.zeros((len(names), len(names))), dtype=np.float64)
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
    fig = go.Figure(
        go.Heatmap(
            z=shares,
            x=names,
            y=names,
            zmin=0,
            zmax=1,
            colorscale="Blues",
            colorbar={"title": {"text": "share of<br>true class"}, "tickformat": ".0%"},
            customdata=counts,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{z:.1%} (%{customdata:.0f})<extra></extra>",
        )
    )
    _layout(fig, title=title, x_title="predicted category", y_title="true category", legend=False)
    fig.update_yaxes(autorange="reversed")  # diagonal from top left, as confusion matrices are read
    fig.update_xaxes(tickangle=-45)
    return fig


def per_client_accuracy(reports: Mapping[str, Mapping], *, colors: Mapping[str, str] | None = None) -> go.Figure:
    """How test accuracy spreads over clients: overlaid 5%-wide bins, one colour per model (clients with targets)."""
    colors = dict(colors or distinct_colors(reports))
    edges = np.linspace(0.0, 1.0, CLIENT_BINS + 1)
    fig, most = go.Figure(), 0
    for label, report in reports.items():
        values = _client_accuracies(report)
        counts, _ = np.histogram(values, bins=edges)
        most = max(most, int(counts.max(initial=0)))
        name = f"{label} (median {np.median(values):.0%})" if len(values) else label
        fig.add_trace(
            go.Bar(
                x=(edges[:-1] + edges[1:]) / 2,
                y=counts,
                width=1.0 / CLIENT_BINS,
                name=name,
                marker={"color": colors.get(label, color_for(label)), "line": {"width": 0}},
                opacity=0.6 if len(reports) > 1 else 0.9,
                customdata=np.stack([edges[:-1], edges[1:]], axis=1),
                hovertemplate="accuracy %{customdata[0]:.0%}–%{customdata[1]:.0%}: %{y} clients<extra></extra>",
            )
        )
    _layout(
        fig, title="Test accuracy per client", x_title="test accuracy of one client (acc@1)", y_title="clients (count)"
    )
    fig.update_layout(barmode="overlay", showlegend=True)
    fig.update_xaxes(tickformat=".0%", range=[0, 1])
    fig.update_yaxes(rangemode="tozero", dtick=max(1, math.ceil(most / 6)))  # whole clients only
    return fig


def accuracy_vs_checkins(tables: Mapping[str, pd.DataFrame], *, colors: Mapping[str, str] | None = None) -> go.Figure:
    """Per-client test accuracy against the client's check-ins (log scale), one colour per run.

    `tables` maps a label to fedlab.results.fairness.client_table (client, accuracy, examples, checkins).
    """
    colors = dict(colors or distinct_colors(tables))
    fig = go.Figure()
    for label, table in tables.items():
        fig.add_trace(
            go.Scatter(
                x=table["checkins"],
                y=table["accuracy"],
                mode="markers",
                name=label,
                marker={"color": colors.get(label, color_for(label)), "size": 8, "opacity": 0.7},
                customdata=np.stack([table["client"], table["examples"]], axis=1) if len(table) else None,
                hovertemplate="client %{customdata[0]}<br>%{x:,} check-ins<br>accuracy %{y:.1%} on "
                "%{customdata[1]} targets<extra></extra>",
            )
        )
    _layout(
        fig,
        title="Client accuracy against client data size",
        x_title="check-ins of the client (count, log scale)",
        y_title="test accuracy of the client (acc@1)",
    )
    fig.update_xaxes(type="log")
    fig.update_yaxes(tickformat=".0%", range=[-0.02, 1.02])
    return fig


def _client_accuracies(report: Mapping) -> np.ndarray:
    per_client = report.get("per_client") or {}
    return np.array([c.get("accuracy", 0.0) for c in per_client.values() if c.get("examples", 0) > 0], dtype=float)


# ----- data -----


def category_bar(distribution: pd.DataFrame, *, top: int = 30) -> go.Figure:
    """Check-ins per category group (fedlab.data.explore.category_distribution), largest at the top."""
    shown = distribution.head(top)
    fig = go.Figure(
        go.Bar(
            x=shown["checkins"],
            y=shown["group"],
            orientation="h",
            marker_color=CENTRAL_COLOR,
            customdata=shown["share"],
            hovertemplate="%{y}: %{x:,} check-ins (%{customdata:.1%})<extra></extra>",
        )
    )
    hidden = len(distribution) - len(shown)
    title = "Check-ins per category" + (f" (top {top}; {hidden} more not shown)" if hidden > 0 else "")
    _layout(fig, title=title, x_title="check-ins (count)", y_title="category", legend=False)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(height=max(320, 22 * len(shown) + 120))
    return fig


def hour_weekday_heatmap(table: pd.DataFrame) -> go.Figure:
    """Check-ins per local hour (x) and weekday (y) (fedlab.data.explore.hour_weekday_counts)."""
    fig = go.Figure(
        go.Heatmap(
            z=table.to_numpy(),
            x=list(table.columns),
            y=list(table.index),
            colorscale="Blues",
            colorbar={"title": {"text": "check-ins"}},
            hovertemplate="%{y} %{x}:00–%{x}:59<br>%{z:,} check-ins<extra></extra>",
        )
    )
    _layout(
        fig, title="When people check in (local time)", x_title="local hour of day (h)", y_title="weekday", legend=False
    )
    fig.update_xaxes(tickmode="linear", dtick=2)
    fig.update_yaxes(autorange="reversed")
    return fig


def checkins_per_user_histogram(counts: pd.Series) -> go.Figure:
    """How many users have how many check-ins, in bins of equal width on a log scale (a few users have very many)."""
    values = np.asarray(counts, dtype=float)
    logs = np.log10(values[values > 0])
    low, high = (float(logs.min()), float(logs.max())) if len(logs) else (0.0, 1.0)
    edges = np.linspace(low, max(high, low + 1e-6), USER_BINS + 1)
    users, _ = np.histogram(logs, bins=edges)
    fig = go.Figure(
        go.Bar(
            x=(edges[:-1] + edges[1:]) / 2,
            y=users,
            width=np.diff(edges),
            marker={"color": CENTRAL_COLOR, "line": {"width": 0}},
            customdata=np.stack([10 ** edges[:-1], 10 ** edges[1:]], axis=1),
            showlegend=False,
            hovertemplate="%{customdata[0]:.0f}–%{customdata[1]:.0f} check-ins: %{y} users<extra></extra>",
        )
    )
    ticks = [t for t in _nice_log_ticks(10**high) if 10**low / 1.5 <= t <= 10**high * 1.5]
    _layout(
        fig,
        title="Check-ins per user",
        x_title="check-ins per user (count, log scale)",
        y_title="users (count)",
        legend=False,
    )
    fig.update_xaxes(tickmode="array", tickvals=np.log10(ticks).tolist(), ticktext=[f"{t:,}" for t in ticks])
    fig.update_yaxes(rangemode="tozero", dtick=max(1, math.ceil(int(users.max(initial=0)) / 6)))  # whole users
    return fig


def _nice_log_ticks(upper: float) -> list[int]:
    ticks, decade = [], 1
    while decade <= upper * 10:
        ticks += [decade, 2 * decade, 5 * decade]
        decade *= 10
    return [t for t in ticks if t <= max(upper, 1)]


def client_mix_heatmap(mix: pd.DataFrame) -> go.Figure:
    """Each client's share of check-ins per category group (fedlab.data.explore.client_category_mix)."""
    fig = go.Figure(
        go.Heatmap(
            z=mix.to_numpy(),
            x=list(mix.columns),
            y=list(mix.index),
            zmin=0,
            colorscale="Blues",
            colorbar={"title": {"text": "share of the<br>client's check-ins"}, "tickformat": ".0%"},
            hovertemplate="client %{y}<br>%{x}: %{z:.1%}<extra></extra>",
        )
    )
    _layout(
        fig,
        title="Category mix per client (non-IID view)",
        x_title="category",
        y_title="client (user id, most active first)",
        legend=False,
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(tickangle=-45, type="category")
    fig.update_layout(height=max(360, 14 * len(mix) + 200))
    return fig


def checkin_map(sample: pd.DataFrame, *, color_column: str | None = "group") -> go.Figure:
    """Check-ins as points on plain longitude/latitude axes (works offline; no map tiles).

    With `color_column`, the MAP_GROUPS most common values get their own colour, the rest share grey.
    Equal aspect: one kilometre east and one north take the same length on screen.
    """
    fig = go.Figure()
    if color_column is not None and color_column in sample.columns and len(sample):
        common = sample[color_column].value_counts().index[:MAP_GROUPS]
        for i, value in enumerate(common):
            _add_points(fig, sample[sample[color_column] == value], str(value), _MAP_COLORS[i % len(_MAP_COLORS)])
        rest = sample[~sample[color_column].isin(common)]
        if len(rest):
            _add_points(fig, rest, "other categories", BASELINE_COLOR)
    else:
        _add_points(fig, sample, "check-ins", CENTRAL_COLOR)
    _layout(
        fig,
        title=f"Where people check in ({len(sample):,} sampled check-ins)",
        x_title="longitude (° east)",
        y_title="latitude (° north)",
    )
    mean_latitude = float(sample["latitude"].mean()) if len(sample) else 0.0
    # A degree of longitude is cos(latitude) times as long as a degree of latitude.
    fig.update_yaxes(scaleanchor="x", scaleratio=1.0 / max(math.cos(math.radians(mean_latitude)), 0.05))
    fig.update_layout(
        height=600,
        margin={"t": 50, "r": 10},
        legend={
            "orientation": "v",
            "y": 1,
            "yanchor": "top",
            "x": 1.01,
            "xanchor": "left",
            "title": {"text": "category"},
            "itemsizing": "constant",
        },
    )
    return fig


_MAP_COLORS = (CENTRAL_COLOR, BIGGEST_COLOR, *PALETTE)


def _add_points(fig: go.Figure, points: pd.DataFrame, name: str, color: str) -> None:
    fig.add_trace(
        go.Scattergl(
            x=points["longitude"],
            y=points["latitude"],
            mode="markers",
            name=name,
            marker={"size": 4, "color": color, "opacity": 0.6},
            hovertemplate=f"{name}<br>%{{y:.4f}}° N, %{{x:.4f}}° E<extra></extra>",
        )
    )


# ----- explanation -----


def fedavg_diagram(clients: int = 4) -> go.Figure:
    """A schematic of one FedAvg round: broadcast, local training on each client, weighted average."""
    fig = go.Figure()
    xs = np.linspace(0.12, 0.88, clients)
    server_x, server_bottom, client_top = 0.5, 0.74, 0.3
    _box(fig, server_x, 0.85, "<b>Server</b><br>global model", CENTRAL_COLOR, width=0.34)
    for i, x in enumerate(xs, 1):
        _box(
            fig, x, 0.19, f"<b>Client {i}</b><br>trains on its own<br>check-ins (never sent)", BIGGEST_COLOR, width=0.18
        )
        # Each client's pair of arrows meets the server at its own spot, so no two pairs cross.
        anchor = server_x + (x - server_x) * 0.3
        _arrow(fig, (anchor - 0.012, server_bottom), (x - 0.025, client_top), CENTRAL_COLOR)  # model out
        _arrow(fig, (x + 0.025, client_top), (anchor + 0.012, server_bottom), "#16a34a")  # update back
    _note(
        fig,
        0.5,
        1.02,
        "④ new global model = average of the client updates, weighted by each client's number of training examples",
    )
    _note(
        fig,
        0.5,
        -0.02,
        "① blue: the server sends the global model · ② each client trains it for a few local "
        "epochs · ③ green: only the model update goes back",
    )
    fig.update_xaxes(visible=False, range=[0, 1])
    fig.update_yaxes(visible=False, range=[-0.08, 1.08])
    fig.update_layout(
        template=TEMPLATE, height=380, margin={"l": 10, "r": 10, "t": 10, "b": 10}, showlegend=False, dragmode=False
    )
    return fig


def _box(fig: go.Figure, x: float, y: float, text: str, color: str, *, width: float) -> None:
    fig.add_shape(
        type="rect",
        x0=x - width / 2,
        x1=x + width / 2,
        y0=y - 0.11,
        y1=y + 0.11,
        line={"color": color, "width": 2},
        fillcolor=color,
        opacity=0.15,
        layer="below",
    )
    fig.add_annotation(x=x, y=y, text=text, showarrow=False, font={"size": 12})


def _arrow(fig: go.Figure, start: tuple[float, float], end: tuple[float, float], color: str) -> None:
    fig.add_annotation(
        x=end[0],
        y=end[1],
        ax=start[0],
        ay=start[1],
        xref="x",
        yref="y",
        axref="x",
        ayref="y",
        text="",
        showarrow=True,
        arrowhead=3,
        arrowsize=1.2,
        arrowwidth=2,
        arrowcolor=color,
    )


def _note(fig: go.Figure, x: float, y: float, text: str) -> None:
    fig.add_annotation(x=x, y=y, text=text, showarrow=False, font={"size": 12}, bgcolor="rgba(255,255,255,0.85)")


# ----- shared layout -----


def _layout(fig: go.Figure, *, title: str, x_title: str, y_title: str, legend: bool = True) -> None:
    # Title at the very top, legend in its own band just above the plot: the two never overlap.
    fig.update_layout(
        template=TEMPLATE,
        title={
            "text": title,
            "font": {"size": 15},
            "x": 0.01,
            "xref": "container",
            "y": 1,
            "yref": "container",
            "yanchor": "top",
            "pad": {"t": 12},
        },
        margin={"l": 60, "r": 20, "t": 110 if legend else 50, "b": 60},
        showlegend=legend,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)


def presentation_figure(fig: go.Figure, *, scale: float = 1.4) -> go.Figure:
    """A copy of `fig` with fonts and height scaled up, for a projector; `fig` itself is left as it was."""
    big = go.Figure(fig)
    font = big.layout.font.size or 12
    title = big.layout.title.font.size or 15
    height = big.layout.height or 450  # Streamlit's and Plotly's usual default height
    big.update_layout(
        font={"size": round(font * scale)}, title_font={"size": round(title * scale)}, height=round(height * scale)
    )
    return big


# ----- which features matter -----


def feature_importance(tables: Mapping[str, pd.DataFrame], *, colors: Mapping[str, str] | None = None) -> go.Figure:
    """Permutation importance of one or more runs side by side: acc@1 lost when each feature is shuffled within
    each client (bars), with its spread over the repeats (error bars); the first run's most important on top.

    `tables` maps a label to fedlab.results.importance.importance_table (feature, drop, spread, ...).
    """
    colors = dict(colors or distinct_colors(tables))
    order = _feature_order(tables)
    fig = go.Figure()
    for label, table in tables.items():
        rows = table.set_index("feature").reindex(order)
        fig.add_trace(
            go.Bar(
                x=rows["drop"],
                y=order,
                orientation="h",
                name=label,
                marker_color=colors.get(label, color_for(label)),
                error_x={"type": "data", "array": rows["spread"].tolist(), "visible": True, "color": KEY_COLOR},
                hovertemplate="%{y}: %{x:+.2%} acc@1 lost<extra>" + label + "</extra>",
            )
        )
    _layout(
        fig,
        title="Which features matter: acc@1 lost when one is shuffled",
        x_title="acc@1 lost (points; error bar: spread over repeats)",
        y_title="feature shuffled",
        legend=len(tables) > 1,
    )
    fig.update_xaxes(tickformat=".1%", zeroline=True, zerolinecolor=KEY_COLOR)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(barmode="group", height=140 + 26 * len(order) * max(1, len(tables)))
    return fig


def feature_helped(tables: Mapping[str, pd.DataFrame], *, colors: Mapping[str, str] | None = None) -> go.Figure:
    """Who each feature helps: the share of clients whose own acc@1 drops when it is shuffled (bars), the spread
    of the clients' own drops written beside each bar."""
    colors = dict(colors or distinct_colors(tables))
    order = _feature_order(tables)
    fig = go.Figure()
    for label, table in tables.items():
        rows = table.set_index("feature").reindex(order)
        fig.add_trace(
            go.Bar(
                x=rows["helped"],
                y=order,
                orientation="h",
                name=label,
                marker_color=colors.get(label, color_for(label)),
                text=[f"± {s * 100:.1f} pts" if s == s else "" for s in rows["client_spread"]],
                textposition="outside",
                cliponaxis=False,
                customdata=np.stack([rows["hurt"], rows["client_spread"]], axis=1),
                hovertemplate="%{y}: helps %{x:.0%} of clients, hurts %{customdata[0]:.0%}; clients' own drops "
                "spread ± %{customdata[1]:.1%}<extra>" + label + "</extra>",
            )
        )
    _layout(
        fig,
        title="Who each feature helps: share of clients it helps",
        x_title="clients whose own acc@1 drops when it is shuffled (share; text: spread across clients)",
        y_title="feature",
        legend=len(tables) > 1,
    )
    fig.update_xaxes(tickformat=".0%", range=[0, 1.15])
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(barmode="group", height=140 + 26 * len(order) * max(1, len(tables)))
    return fig


def _feature_order(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    order: list[str] = []
    for table in tables.values():
        order += [f for f in table["feature"] if f not in order]
    return order


def sweep_accuracy(table: pd.DataFrame, baselines: Mapping[str, float], *, color: str = CENTRAL_COLOR) -> go.Figure:
    """An ablation sweep's test acc@1 per run (the reference run first, darker), a dashed line at the
    reference's acc@1 and grey bars for the baselines on the same targets.

    `table` is fedlab.results.sweep_table.sweep_table (run, accuracy, accuracy_delta, ...)."""
    done = table.dropna(subset=["accuracy"])
    names = [*done["run"], *(BASELINE_LABELS.get(k, k) for k in baselines)]
    values = [*done["accuracy"], *baselines.values()]
    deltas = [f" ({d * 100:+.1f} pts)" if i else "" for i, d in enumerate(done["accuracy_delta"])]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker={
                "color": [color] * len(done) + [BASELINE_COLOR] * len(baselines),
                "opacity": [1.0] + [0.6] * (len(values) - 1) if values else 1.0,
            },
            text=[f"{v:.1%}{d}" for v, d in zip(values, deltas + [""] * len(baselines))],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
            showlegend=False,
        )
    )
    if len(done):
        fig.add_vline(x=float(done["accuracy"].iloc[0]), line_dash="dash", line_color=KEY_COLOR)
    _layout(fig, title="Ablation sweep: test acc@1 of each run", x_title="test accuracy (acc@1)", y_title="run")
    fig.update_layout(showlegend=False)
    fig.update_xaxes(tickformat=".0%", range=[0, min(1.0, max(values, default=0) * 1.25 + 0.05)])
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(height=120 + 30 * len(names))
    return fig
