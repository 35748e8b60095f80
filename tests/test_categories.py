"""Category groupings: the packaged tables and the vectorised lookup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedlab.data import categories
from fedlab.data.categories import GROUPINGS, OTHER, group_categories, group_names, load_table
from fedlab.errors import ConfigError

REAL_NYC = Path(__file__).resolve().parents[2] / "shared/data/foursquare/dataset_TSMC2014_NYC_subset_reconstructed.txt"

ROOTS = {
    "Arts & Entertainment",
    "College & University",
    "Event",
    "Food",
    "Nightlife Spot",
    "Outdoors & Recreation",
    "Professional & Other Places",
    "Residence",
    "Shop & Service",
    "Travel & Transport",
}
# The study's 27 groups and how many names each had (of 251).
STUDY_UBER_SIZES = {
    "Restaurant": 68,
    "Shopping": 30,
    "Entertainment": 18,
    "School": 17,
    "Culture": 12,
    "Service": 11,
    "Snacks": 11,
    "Public Transport": 10,
    "Misc Shopping": 8,
    "Outdoors": 7,
    "Religion": 7,
    "Cosmetics": 5,
    "Event": 5,
    "Home": 5,
    "Infrastructure": 5,
    "Misc": 5,
    "Cafe": 4,
    "Gas Station / Parking": 3,
    "Government": 3,
    "Park": 3,
    "Sports": 3,
    "Work": 3,
    "Bar": 2,
    "Grocery": 2,
    "Medical": 2,
    "Building": 1,
    "Hotel": 1,
}
# The pairs the study's preprocessing notebook shows.
STUDY_PAIRS = {
    "Arts & Crafts Store": "Shopping",
    "Bank": "Service",
    "Bar": "Bar",
    "Bridge": "Infrastructure",
    "Bus Station": "Public Transport",
    "Coffee Shop": "Cafe",
    "Food & Drink Shop": "Grocery",
    "Food Truck": "Snacks",
    "General Travel": "Public Transport",
    "Gym / Fitness Center": "Sports",
    "Home (private)": "Home",
    "Medical Center": "Medical",
    "Neighborhood": "Home",
    "Office": "Work",
    "Other Great Outdoors": "Outdoors",
    "Park": "Park",
    "Smoke Shop": "Shopping",
    "Subway": "Public Transport",
    "Train Station": "Public Transport",
}


def test_study_pairs_map_as_in_the_study():
    labels, unknown = group_categories(np.array(list(STUDY_PAIRS)), "uber")
    assert unknown == 0
    assert dict(zip(STUDY_PAIRS, labels)) == STUDY_PAIRS


def test_every_root_is_one_of_the_ten():
    assert set(load_table("root").values()) <= ROOTS


def test_every_uber_group_is_one_of_the_27():
    assert set(load_table("uber").values()) <= set(STUDY_UBER_SIZES)


def test_uber_groups_are_no_larger_than_in_the_study():
    sizes = pd.Series(load_table("uber")).value_counts()
    too_big = {g: n for g, n in sizes.items() if n > STUDY_UBER_SIZES[g]}
    assert too_big == {}


def test_both_tables_cover_the_same_names():
    assert set(load_table("uber")) == set(load_table("root"))


def test_some_roots_and_ubers_by_what_the_place_is():
    names = np.array(["Sushi Restaurant", "Art Museum", "University", "Café", "Hotel"])
    uber, _ = group_categories(names, "uber")
    root, _ = group_categories(names, "root")
    assert list(uber) == ["Restaurant", "Culture", "School", "Cafe", "Hotel"]
    assert list(root) == ["Food", "Arts & Entertainment", "College & University", "Food", "Travel & Transport"]


def test_unknown_names_go_to_other_and_are_counted_per_row():
    names = pd.Series(["Bar", "Moon Base", "Moon Base", "Park", None, "Lunar Café"])
    labels, unknown = group_categories(names, "uber")
    assert list(labels) == ["Bar", OTHER, OTHER, "Park", OTHER, OTHER]
    assert unknown == 4


def test_fine_returns_names_unchanged():
    names = pd.Series(["Bar", "  Moon Base ", "Park"])
    labels, unknown = group_categories(names, "fine")
    assert list(labels) == ["Bar", "  Moon Base ", "Park"]
    assert unknown == 0


def test_surrounding_whitespace_is_stripped():
    labels, unknown = group_categories(np.array([" Bar ", "\tPark\n"]), "root")
    assert list(labels) == ["Nightlife Spot", "Outdoors & Recreation"]
    assert unknown == 0


def test_case_spacing_and_unicode_form_are_normalised():
    decomposed_cafe = "Cafe\u0301"  # "Café" with a combining accent (NFD)
    names = np.array(["coffee shop", "Ramen / Noodle House", "GYM  /  FITNESS CENTER", decomposed_cafe])
    labels, unknown = group_categories(names, "uber")
    assert list(labels) == ["Cafe", "Restaurant", "Sports", "Cafe"]
    assert unknown == 0


def test_double_spaced_table_name_matches_exactly():
    labels, _ = group_categories(np.array(["Ramen /  Noodle House"]), "root")
    assert list(labels) == ["Food"]


def test_empty_input_gives_empty_labels():
    labels, unknown = group_categories(np.array([], dtype=object), "uber")
    assert labels.shape == (0,)
    assert unknown == 0


@pytest.mark.parametrize("grouping", ["Uber", "coarse", ""])
def test_unknown_grouping_raises_config_error(grouping):
    with pytest.raises(ConfigError, match="grouping"):
        group_categories(np.array(["Bar"]), grouping)
    with pytest.raises(ConfigError):
        load_table(grouping)


def test_group_names_are_sorted_and_distinct():
    assert group_names("uber") == sorted(STUDY_UBER_SIZES)
    assert group_names("root") == sorted(ROOTS - {"Event"})  # no name in the NYC data is an Event
    assert group_names("fine") == sorted(load_table("uber"))


def test_load_table_returns_a_copy():
    load_table("uber")["Bar"] = "Mutated"
    assert load_table("uber")["Bar"] == "Bar"


def test_groupings_agree_with_config():
    from fedlab import config

    assert categories.GROUPINGS == config.GROUPINGS == GROUPINGS


def test_150k_rows_count_every_unknown_name():
    table = list(load_table("uber"))
    names = pd.Series(np.random.default_rng(0).choice(table + ["Moon Base"], size=150_000))
    labels, unknown = group_categories(names, "uber")
    assert unknown == int((names == "Moon Base").sum())
    assert len(labels) == 150_000
    assert (labels == OTHER).sum() == unknown
