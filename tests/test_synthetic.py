"""fedlab.data.synthetic: the seeded default city."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedlab.data.categories import load_table
from fedlab.data.loader import COLUMNS, load_checkins
from fedlab.data.synthetic import CATEGORIES, SYNTHETIC_LABEL, category_id, generate_city, write_raw

REAL_FILE = Path(__file__).resolve().parents[2] / "shared/data/foursquare/dataset_TSMC2014_NYC_subset_reconstructed.txt"
HEX24 = re.compile(r"^[0-9a-f]{24}$")


@pytest.fixture(scope="module")
def city() -> pd.DataFrame:
    return generate_city()


def test_same_seed_same_city(city):
    pd.testing.assert_frame_equal(generate_city(seed=0), city)


def test_other_seed_other_city(city):
    assert not generate_city(seed=1).equals(city)


def test_canonical_columns_and_dtypes(city):
    assert tuple(city.columns) == COLUMNS
    assert [str(t) for t in city.dtypes] == ["object"] * 4 + ["float64", "float64", "int64", "datetime64[ns]"]
    assert all(isinstance(value, str) for value in city["category"])


def test_round_trips_through_the_raw_format(city, tmp_path):
    path = tmp_path / "city.txt"
    write_raw(city, path)
    loaded = load_checkins(path)
    assert (loaded.format, loaded.encoding, loaded.skipped) == ("raw", "latin-1", {})
    pd.testing.assert_frame_equal(loaded.frame, city)


def test_raw_file_is_tab_separated_latin1_without_header(city, tmp_path):
    path = tmp_path / "city.txt"
    write_raw(city[city["category"] == "Café"].head(2), path)
    first = path.read_bytes().split(b"\n")[0].split(b"\t")
    assert len(first) == 8 and first[0].isdigit()
    assert first[3] == b"Caf\xe9"  # Latin-1
    assert re.fullmatch(rb"[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \+0000 \d{4}", first[7])


def test_default_has_300_users(city):
    assert city["user"].nunique() == 300
    assert set(city["user"]) == {str(i) for i in range(1, 301)}


def test_checkins_per_user_range_widely(city):
    counts = city.groupby("user").size()
    assert counts.min() >= 30 and counts.max() <= 600
    assert counts.quantile(0.1) < 60 and counts.quantile(0.95) > 350  # light and heavy users


def test_coordinates_are_in_new_york(city):
    assert city["latitude"].between(40.55, 40.90).all()
    assert city["longitude"].between(-74.05, -73.70).all()


def test_about_thirty_real_category_names(city):
    names = set(city["category"])
    assert 28 <= len(names) <= 34
    assert names <= set(CATEGORIES)
    assert names <= set(load_table("root"))  # the names of the real NYC data


@pytest.mark.skipif(not REAL_FILE.exists(), reason="real data absent")
def test_category_names_appear_in_the_real_file(city):
    real = set(pd.read_csv(REAL_FILE, sep="\t", header=None, usecols=[3], encoding="latin-1", quoting=3)[3])
    assert set(city["category"]) <= real


def test_category_ids_are_stable_hex_per_name(city):
    pairs = city[["category", "category_id"]].drop_duplicates()
    assert pairs["category"].is_unique and pairs["category_id"].is_unique
    assert all(category_id(name) == cid for name, cid in pairs.itertuples(index=False))
    assert all(HEX24.match(cid) for cid in pairs["category_id"])


def test_venues_have_hex_ids_and_fixed_place_and_category(city):
    per_venue = city.groupby("venue")[["category", "latitude", "longitude"]].nunique()
    assert (per_venue == 1).all().all()
    assert all(HEX24.match(venue) for venue in per_venue.index)


def test_users_keep_going_back_to_the_same_places(city):
    top_share = city.groupby("user")["venue"].agg(lambda v: v.value_counts(normalize=True).iloc[0])
    distinct = city.groupby("user")["venue"].nunique() / city.groupby("user").size()
    assert top_share.median() > 0.15 and distinct.median() < 0.4


def test_each_user_has_one_home(city):
    homes = city[city["category"] == "Home (private)"].groupby("user")["venue"].nunique()
    assert (homes == 1).all()


def test_times_start_2012_04_03_local_and_follow_new_york_dst(city):
    local = city["utc_time"] + pd.to_timedelta(city["tz_offset"], unit="m")
    assert local.min() >= pd.Timestamp("2012-04-03") and local.min() < pd.Timestamp("2012-04-05")
    assert local.max() < pd.Timestamp("2013-04-04 06:00")
    summer, winter = city[local.dt.month == 7], city[local.dt.month == 1]
    assert (summer["tz_offset"] == -240).all() and (winter["tz_offset"] == -300).all()


def test_rows_are_sorted_by_time(city):
    assert city["utc_time"].is_monotonic_increasing


def test_weekday_mornings_and_weekend_parks(city):
    local = city["utc_time"] + pd.to_timedelta(city["tz_offset"], unit="m")
    office = local[city["category"] == "Office"]
    park = local[city["category"] == "Park"]
    assert (office.dt.weekday < 5).mean() > 0.95 and office.dt.hour.between(7, 18).mean() > 0.7
    assert (park.dt.weekday >= 5).mean() > 0.9


def test_next_category_is_learnable_beyond_the_majority_class(city):
    # Predict each user's next category from their current one (a lookup table fit on the first
    # 80% of each user's check-ins); it must clearly beat always guessing the most common class.
    frame = city.sort_values(["user", "utc_time"], kind="stable")
    groups = frame.groupby("user")
    frame = frame.assign(
        next=groups["category"].shift(-1), position=groups.cumcount() / groups["user"].transform("size")
    ).dropna(subset=["next"])
    train, test = frame[frame["position"] < 0.8], frame[frame["position"] >= 0.8]
    majority = train["next"].value_counts().index[0]
    table = train.groupby(["user", "category"])["next"].agg(lambda s: s.value_counts().index[0]).rename("guess")
    guess = test.join(table, on=["user", "category"])["guess"].fillna(majority)
    assert (guess == test["next"]).mean() > (test["next"] == majority).mean() + 0.07


def test_size_options(tmp_path):
    small = generate_city(users=20, days=30, seed=3)
    assert small["user"].nunique() == 20
    local = small["utc_time"] + pd.to_timedelta(small["tz_offset"], unit="m")
    assert local.max() < pd.Timestamp("2012-05-04")
    assert small.groupby("user").size().max() <= 600 * 30 / 365


@pytest.mark.parametrize("options", [{"users": 0}, {"days": 3}, {"users": 2.5}, {"days": True}])
def test_bad_options_are_refused(options):
    with pytest.raises(ValueError):
        generate_city(**options)


def test_write_raw_refuses_a_tab_inside_a_value(city, tmp_path):
    frame = city.head(2).copy()
    frame.loc[0, "category"] = "Bar\tPub"
    with pytest.raises(ValueError, match="tab"):
        write_raw(frame, tmp_path / "bad.txt")


def test_write_raw_refuses_text_outside_latin1(city, tmp_path):
    frame = city.head(2).copy()
    frame.loc[0, "category"] = "Bar €"
    with pytest.raises(ValueError, match="Latin-1"):
        write_raw(frame, tmp_path / "bad.txt")


def test_label():
    assert SYNTHETIC_LABEL == "Synthetic city (generated)"


def test_no_missing_values(city):
    assert not city.isna().any().any()
    assert np.isfinite(city[["latitude", "longitude"]].to_numpy()).all()
