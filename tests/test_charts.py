"""fedlab.results.charts: the figures hold the traces, axis titles (with units) and colours they promise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from fedlab.data import explore
from fedlab.results import charts, fairness
from fedlab.results.baselines import BASELINE_LABELS


def rounds(n: int, scale: float = 1.0) -> pd.DataFrame:
    r = np.arange(1, n + 1)
    return pd.DataFrame(
        {
            "round": r,
            "train_loss": scale * 2 / r,
            "train_accuracy": 0.1 * r,
            "val_loss": scale * 2.5 / r,
            "val_accuracy": 0.08 * r,
            "clients": 3,
            "seconds": 0.5,
            "is_best": True,
        }
    )


def report(names=("Food", "Home", "Work"), support=(5, 20, 10)) -> dict:
    return {
        "accuracy": 0.5,
        "top5_accuracy": 0.9,
        "mrr": 0.6,
        "loss": 1.2,
        "examples": sum(support),
        "class_names": list(names),
        "per_class": {
            n: {"precision": 0.5, "recall": 0.1 * (i + 1), "support": s} for i, (n, s) in enumerate(zip(names, support))
        },
        "confusion": [[2, 3, 0], [0, 0, 0], [1, 1, 8]],
        "per_client": {
            "1": {"accuracy": 0.2, "examples": 4, "checkins": 20},
            "2": {"accuracy": 0.8, "examples": 6, "checkins": 30},
            "3": {"accuracy": 0.0, "examples": 0, "checkins": 5},
        },  # no test targets: left out
    }


def axis_titles(fig: go.Figure) -> tuple[str, str]:
    return fig.layout.xaxis.title.text, fig.layout.yaxis.title.text


# ----- colours -----


def test_presets_have_fixed_colours_and_others_a_stable_palette_colour():
    assert charts.color_for("central") == charts.CENTRAL_COLOR
    assert charts.color_for("Central · federated · N17") == charts.CENTRAL_COLOR
    assert charts.color_for("biggest · centralized · N9") == charts.BIGGEST_COLOR
    other = charts.color_for("custom (3 features) · federated · N17")
    assert other in charts.PALETTE and other == charts.color_for("custom (3 features) · federated · N17")
    assert charts.BASELINE_COLOR not in charts.PALETTE


def test_distinct_colors_moves_a_clashing_label_to_an_unused_colour():
    colors = charts.distinct_colors(["central · N17", "central · N9", "biggest"])
    assert colors["central · N17"] == charts.CENTRAL_COLOR and colors["biggest"] == charts.BIGGEST_COLOR
    assert len(set(colors.values())) == 3


# ----- learning curves -----


def test_learning_curves_train_dashed_validation_solid_in_the_run_colour():
    fig = charts.learning_curves({"central": rounds(3), "biggest": rounds(3, 2.0)}, "loss", max_rounds=10)
    curves = fig.data[:4]
    assert [t.name for t in curves] == ["central · train", "central", "biggest · train", "biggest"]
    assert [t.line.dash for t in curves] == ["dash", "solid", "dash", "solid"]
    assert [t.line.color for t in curves] == [charts.CENTRAL_COLOR] * 2 + [charts.BIGGEST_COLOR] * 2
    assert [t.showlegend for t in curves] == [False, True, False, True]  # each run once in the legend
    assert [t.name for t in fig.data[4:]] == ["training (dashed)", "validation (solid)"]
    assert list(curves[1].y) == pytest.approx(list(2.5 / np.arange(1, 4)))
    assert axis_titles(fig) == ("round", "cross-entropy loss (nats)")
    assert tuple(fig.layout.xaxis.range) == (0.5, 10.5)


def test_accuracy_curves_show_percentages():
    fig = charts.learning_curves({"central": rounds(2)}, "accuracy")
    assert axis_titles(fig) == ("round", "accuracy")
    assert fig.layout.yaxis.tickformat == ".0%"
    assert list(fig.data[0].y) == pytest.approx([0.1, 0.2])


def test_reference_run_is_drawn_first_and_faint():
    fig = charts.learning_curves({"biggest": rounds(2)}, "loss", reference=("central old", rounds(4)))
    assert fig.data[0].name.startswith("reference: central old")
    assert fig.data[0].opacity == charts.REFERENCE_OPACITY and fig.data[1].opacity == charts.REFERENCE_OPACITY
    assert fig.data[2].opacity in (None, 1.0)


def test_learning_curves_reject_unknown_metric():
    with pytest.raises(ValueError, match="metric"):
        charts.learning_curves({"central": rounds(1)}, "mrr")


def test_explicit_colours_win():
    fig = charts.learning_curves({"x": rounds(2)}, "loss", colors={"x": "#123456"})
    assert {t.line.color for t in fig.data[:2]} == {"#123456"}


# ----- results -----


def test_metrics_vs_baselines_grey_baselines_with_values():
    baselines = {key: 0.1 * (i + 1) for i, key in enumerate(BASELINE_LABELS)}
    fig = charts.metrics_vs_baselines({"central": 0.45, "biggest": 0.5}, baselines)
    (bar,) = fig.data
    assert bar.orientation == "h"
    assert list(bar.y) == ["central", "biggest", *BASELINE_LABELS.values()]
    assert list(bar.x) == pytest.approx([0.45, 0.5, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert list(bar.marker.color) == [charts.CENTRAL_COLOR, charts.BIGGEST_COLOR] + [charts.BASELINE_COLOR] * 5
    assert list(bar.text)[:3] == ["45.0%", "50.0%", "10.0%"]
    assert axis_titles(fig) == ("test accuracy (acc@1)", "predictor")


def test_per_class_recall_orders_classes_by_support():
    fig = charts.per_class_recall({"central": report(), "biggest": report()})
    assert len(fig.data) == 2 and fig.layout.barmode == "group"
    assert list(fig.data[0].x) == ["Home", "Work", "Food"]
    assert list(fig.data[0].y) == pytest.approx([0.2, 0.3, 0.1])
    assert fig.data[1].marker.color == charts.BIGGEST_COLOR
    x_title, y_title = axis_titles(fig)
    assert "category" in x_title and "recall" in y_title


def test_confusion_heatmap_is_row_normalised_with_class_names():
    fig = charts.confusion_heatmap(report(), title="Confusion: central")
    z = np.array(fig.data[0].z)
    np.testing.assert_allclose(z.sum(axis=1), [1.0, 0.0, 1.0])  # the empty row stays 0, not NaN
    assert z[0, 1] == pytest.approx(0.6)
    assert list(fig.data[0].x) == list(fig.data[0].y) == ["Food", "Home", "Work"]
    assert axis_titles(fig) == ("predicted category", "true category")
    assert fig.layout.title.text == "Confusion: central"


def test_per_client_accuracy_counts_only_clients_with_targets():
    fig = charts.per_client_accuracy({"central": report(), "biggest": report()})
    first, second = fig.data
    assert sum(first.y) == 2  # client 3 has no test targets
    counted = {round(x, 3): y for x, y in zip(first.x, first.y) if y}
    assert counted == {0.225: 1, 0.825: 1}  # the 20-25% and 80-85% bins
    assert first.marker.color == charts.CENTRAL_COLOR and second.marker.color == charts.BIGGEST_COLOR
    assert first.name == "central (median 50%)"
    assert fig.layout.yaxis.dtick == 1  # whole clients
    x_title, y_title = axis_titles(fig)
    assert "accuracy" in x_title and "clients" in y_title


# ----- data -----


@pytest.fixture
def city() -> pd.DataFrame:
    from fedlab.data.synthetic import generate_city

    return generate_city(users=25, days=40, seed=1)


def test_category_bar_largest_first(city):
    dist = explore.category_distribution(city, "uber")
    fig = charts.category_bar(dist)
    assert fig.data[0].orientation == "h" and list(fig.data[0].y) == list(dist["group"])
    assert axis_titles(fig) == ("check-ins (count)", "category")


def test_hour_weekday_heatmap_axes(city):
    fig = charts.hour_weekday_heatmap(explore.hour_weekday_counts(city))
    assert np.array(fig.data[0].z).shape == (7, 24)
    assert axis_titles(fig) == ("local hour of day (h)", "weekday")


def test_checkins_per_user_histogram_is_on_a_log_scale(city):
    counts = explore.checkins_per_user(city)
    fig = charts.checkins_per_user_histogram(counts)
    (bars,) = fig.data
    assert sum(bars.y) == len(counts)  # every user in one bin
    assert min(bars.x) >= np.log10(counts.min()) and max(bars.x) <= np.log10(counts.max())
    assert "log scale" in fig.layout.xaxis.title.text and fig.layout.yaxis.title.text == "users (count)"
    assert fig.layout.xaxis.ticktext and all(t.replace(",", "").isdigit() for t in fig.layout.xaxis.ticktext)
    assert fig.layout.yaxis.dtick >= 1  # whole users


def test_client_mix_heatmap_shows_shares(city):
    mix = explore.client_category_mix(city, "uber", top_users=10)
    fig = charts.client_mix_heatmap(mix)
    assert list(fig.data[0].y) == list(mix.index) and list(fig.data[0].x) == list(mix.columns)
    assert fig.layout.yaxis.title.text.startswith("client")


def test_checkin_map_is_a_plain_scatter_with_equal_aspect(city):
    sample = explore.map_sample(city, max_points=500, grouping="uber")
    fig = charts.checkin_map(sample)
    assert fig.data and all(isinstance(t, go.Scattergl) for t in fig.data)
    assert len(fig.data) <= charts.MAP_GROUPS + 1
    assert sum(len(t.x) for t in fig.data) == len(sample)
    assert fig.layout.yaxis.scaleanchor == "x"
    assert fig.layout.yaxis.scaleratio == pytest.approx(1 / np.cos(np.radians(sample["latitude"].mean())))
    assert axis_titles(fig) == ("longitude (° east)", "latitude (° north)")
    layout = fig.to_plotly_json()["layout"]
    assert not {"map", "mapbox", "geo"} & set(layout)  # no tiles or basemaps: works offline


def test_checkin_map_without_groups_is_one_trace(city):
    fig = charts.checkin_map(explore.map_sample(city, max_points=50), color_column=None)
    assert len(fig.data) == 1 and len(fig.data[0].x) == 50


def test_fedavg_diagram_names_server_clients_and_steps():
    fig = charts.fedavg_diagram(clients=3)
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert "Server" in texts and texts.count("Client") == 3
    assert "sends the global model" in texts and "average" in texts
    assert sum(1 for a in fig.layout.annotations if a.showarrow) == 6  # down and up per client


def test_every_data_axis_has_a_title(city):
    figures = [
        charts.learning_curves({"a": rounds(2)}, "loss"),
        charts.metrics_vs_baselines({"a": 0.3}, {"majority": 0.1}),
        charts.per_class_recall({"a": report()}),
        charts.confusion_heatmap(report()),
        charts.per_client_accuracy({"a": report()}),
        charts.category_bar(explore.category_distribution(city, "root")),
        charts.hour_weekday_heatmap(explore.hour_weekday_counts(city)),
        charts.checkins_per_user_histogram(explore.checkins_per_user(city)),
        charts.client_mix_heatmap(explore.client_category_mix(city, "root", 5)),
        charts.checkin_map(explore.map_sample(city, 100)),
        charts.accuracy_vs_checkins({"a": fairness.client_table(report()["per_client"])}),
    ]
    for fig in figures:
        x_title, y_title = axis_titles(fig)
        assert x_title and y_title, fig.layout.title.text


# ----- fairness and presentation -----


def test_accuracy_vs_checkins_has_one_coloured_point_per_scored_client():
    tables = {
        "central": fairness.client_table(report()["per_client"]),
        "other": fairness.client_table({"9": {"accuracy": 0.5, "examples": 2, "checkins": 1000}}),
    }
    fig = charts.accuracy_vs_checkins(tables)
    central, other = fig.data
    assert list(central.x) == [30, 20] and list(central.y) == [0.8, 0.2]  # client 3 has no targets
    assert central.marker.color == charts.CENTRAL_COLOR and other.marker.color != charts.CENTRAL_COLOR
    assert fig.layout.xaxis.type == "log" and "check-ins" in fig.layout.xaxis.title.text


def test_accuracy_vs_checkins_of_a_run_without_scored_clients_is_empty_not_an_error():
    fig = charts.accuracy_vs_checkins({"a": fairness.client_table({})})
    assert len(fig.data) == 1 and len(fig.data[0].x) == 0


def test_presentation_figure_scales_fonts_and_height_of_a_copy():
    fig = charts.per_client_accuracy({"a": report()})
    big = charts.presentation_figure(fig, scale=1.5)
    assert big.layout.font.size == 18 and big.layout.title.font.size == round(15 * 1.5)
    assert big.layout.height == 675
    assert fig.layout.font.size is None and fig.layout.height is None  # the original is untouched
    assert big.data[0].y.tolist() == list(fig.data[0].y)
