"""fedlab.data.explore on tiny hand-built check-in frames, where every expected number can be counted by eye."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedlab.data import explore
from fedlab.data.categories import OTHER


def frame(rows: list[tuple]) -> pd.DataFrame:
    """Canonical frame from (user, venue, category, utc time, tz offset minutes) tuples."""
    out = pd.DataFrame(rows, columns=["user", "venue", "category", "utc_time", "tz_offset"])
    out["category_id"] = out["category"].map(lambda c: f"id-{c}")
    out["latitude"] = 40.7 + np.arange(len(out)) * 0.001
    out["longitude"] = -74.0 + np.arange(len(out)) * 0.001
    out["utc_time"] = pd.to_datetime(out["utc_time"])
    out["tz_offset"] = out["tz_offset"].astype(np.int64)
    return out[["user", "venue", "category_id", "category", "latitude", "longitude", "tz_offset", "utc_time"]]


@pytest.fixture
def checkins() -> pd.DataFrame:
    # User a: 3 check-ins, b: 2, c: 1. 2012-04-03 was a Tuesday.
    return frame(
        [
            ("a", "v1", "Coffee Shop", "2012-04-03 02:00", -240),  # local Monday 22:00
            ("a", "v2", "Office", "2012-04-03 13:30", -240),  # local Tuesday 09:30
            ("a", "v1", "Coffee Shop", "2012-04-04 12:00", -240),  # local Wednesday 08:00
            ("b", "v3", "Bar", "2012-04-07 03:00", 0),  # Saturday 03:00 (UTC = local)
            ("b", "v2", "Office", "2012-04-09 09:00", 60),  # Monday 10:00
            ("c", "v4", "Not A Real Category", "2012-04-10 23:30", 60),  # Wednesday 00:30
        ]
    )


def test_overview_counts_rows_users_venues_categories_and_time_span(checkins):
    out = explore.overview(checkins)
    assert (out["rows"], out["users"], out["venues"], out["categories"]) == (6, 3, 4, 4)
    assert out["first_time"] == pd.Timestamp("2012-04-03 02:00")
    assert out["last_time"] == pd.Timestamp("2012-04-10 23:30")


def test_overview_of_an_empty_frame_has_no_time_span(checkins):
    out = explore.overview(checkins.iloc[:0])
    assert out["rows"] == 0 and out["first_time"] is None and out["last_time"] is None


def test_checkins_per_user_most_active_first(checkins):
    counts = explore.checkins_per_user(checkins)
    assert counts.to_dict() == {"a": 3, "b": 2, "c": 1}
    assert list(counts.index) == ["a", "b", "c"] and counts.name == "checkins"


def test_category_distribution_groups_names_and_counts_unknown_as_other(checkins):
    out = explore.category_distribution(checkins, "uber")
    assert list(out.columns) == ["group", "checkins", "share"]
    assert dict(zip(out["group"], out["checkins"])) == {"Cafe": 2, "Work": 2, "Bar": 1, OTHER: 1}
    assert list(out["checkins"]) == sorted(out["checkins"], reverse=True)
    assert out["share"].sum() == pytest.approx(1.0)


def test_category_distribution_fine_keeps_every_name(checkins):
    out = explore.category_distribution(checkins, "fine")
    assert set(out["group"]) == {"Coffee Shop", "Office", "Bar", "Not A Real Category"}


def test_hour_weekday_counts_use_local_time(checkins):
    table = explore.hour_weekday_counts(checkins)
    assert table.shape == (7, 24)
    assert list(table.index) == list(explore.WEEKDAYS) and list(table.columns) == list(range(24))
    assert table.to_numpy().sum() == len(checkins)
    expected = {
        ("Monday", 22): 1,
        ("Tuesday", 9): 1,
        ("Wednesday", 8): 1,
        ("Saturday", 3): 1,
        ("Monday", 10): 1,
        ("Wednesday", 0): 1,
    }
    for (day, hour), count in expected.items():
        assert table.loc[day, hour] == count, (day, hour)
    assert table.loc["Tuesday", 2] == 0  # the UTC hour of the first row is not used


def test_client_category_mix_rows_are_shares_of_the_most_active_clients(checkins):
    mix = explore.client_category_mix(checkins, "uber", top_users=2)
    assert list(mix.index) == ["a", "b"]  # c is not among the top 2
    np.testing.assert_allclose(mix.sum(axis=1), 1.0)
    assert mix.loc["a", "Cafe"] == pytest.approx(2 / 3) and mix.loc["a", "Work"] == pytest.approx(1 / 3)
    assert mix.loc["b", "Bar"] == pytest.approx(0.5) and mix.loc["b", "Cafe"] == 0.0
    assert mix.columns[0] in ("Cafe", "Work")  # the most common groups come first


def test_client_category_mix_caps_the_rows(checkins):
    assert list(explore.client_category_mix(checkins, "uber", top_users=None, max_clients=1).index) == ["a"]
    assert len(explore.client_category_mix(checkins, "uber", top_users=None)) == 3


def test_map_sample_is_bounded_seeded_and_keeps_small_frames(checkins):
    assert len(explore.map_sample(checkins)) == len(checkins)
    small = explore.map_sample(checkins, max_points=3, seed=1)
    assert len(small) == 3
    pd.testing.assert_frame_equal(small, explore.map_sample(checkins, max_points=3, seed=1))
    assert set(small.columns) == {"user", "longitude", "latitude", "category"}


def test_map_sample_adds_groups_when_asked(checkins):
    sample = explore.map_sample(checkins, grouping="uber")
    assert list(sample["group"]) == ["Cafe", "Work", "Cafe", "Bar", "Work", OTHER]


def test_summaries_of_the_synthetic_city_are_consistent():
    from fedlab.data.synthetic import generate_city

    city = generate_city(users=30, days=60, seed=3)
    assert explore.checkins_per_user(city).sum() == len(city)
    assert explore.hour_weekday_counts(city).to_numpy().sum() == len(city)
    assert explore.category_distribution(city, "root")["checkins"].sum() == len(city)
    assert len(explore.map_sample(city, max_points=100)) == min(100, len(city))
