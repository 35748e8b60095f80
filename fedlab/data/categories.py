"""Category groupings: map Foursquare venue-category names to the classes a model predicts.

Three groupings:

- ``fine``: every category name is its own class.
- ``root``: Foursquare's 10 top-level categories (Arts & Entertainment, College & University,
  Event, Food, Nightlife Spot, Outdoors & Recreation, Professional & Other Places, Residence,
  Shop & Service, Travel & Transport).
- ``uber``: the 27 groups of the original study (Restaurant, Shopping, Entertainment, ...).

How the packaged tables (``fedlab/data/tables/category_*.csv``, UTF-8, one row per name) were made:
they list the 209 category names of the filtered NYC TSMC2014 benchmark subset (the synthetic
default city draws its names from these). Only public taxonomy names are stored, no check-ins.

- ``category_root.csv``: each name's root in the public Foursquare trees, taken from the 2014
  name paths and, for 2012 names missing there (Subway, Light Rail, Athletic & Sport,
  Spa / Massage, "Ramen /  Noodle House"), from the 2016 id tree; Ferry by hand (Travel &
  Transport). Where the trees disagree (for example Gym / Fitness Center) the 2014 name path won.
  No name in the data falls under the Event root.
- ``category_uber.csv``: the study never published its full mapping (251 names -> 27 groups).
  The 19 pairs its preprocessing notebook shows are kept exactly (e.g. Neighborhood -> Home,
  Gym / Fitness Center -> Sports, Smoke Shop -> Shopping); every other name was assigned by
  hand from what the place is, keeping each group no larger than the study's count for it
  (every cuisine -> Restaurant; bakeries, delis, sweets -> Snacks; everyday-needs stores ->
  Misc Shopping; schools and colleges -> School; museums, galleries, theaters -> Culture).
  Those hand assignments are a plausible reconstruction, not the study's exact table.

Names not in a table are counted and labelled ``OTHER``; matching first strips whitespace,
then tries a normalised form (Unicode NFC, case-folded, runs of spaces collapsed).
"""

from __future__ import annotations

import csv
import functools
import io
import re
import unicodedata
from importlib import resources

import numpy as np
import pandas as pd

from fedlab.errors import ConfigError

GROUPINGS = ("uber", "root", "fine")
OTHER = "Other"

# The grouping -> (table file, name of its group column).
_TABLES = {"uber": ("category_uber.csv", "uber"), "root": ("category_root.csv", "root")}
_SPACES = re.compile(r"\s+")


def _check_grouping(grouping: str) -> None:
    if grouping not in GROUPINGS:
        raise ConfigError(f"unknown category grouping {grouping!r}; choose one of {', '.join(GROUPINGS)}")


@functools.cache
def _read_pairs(grouping: str) -> tuple[tuple[str, str], ...]:
    """The table's (category, group) rows; a tuple so the cached value cannot be mutated."""
    filename, column = _TABLES[grouping]
    text = resources.files("fedlab.data").joinpath("tables", filename).read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO(text))
    return tuple((row["category"], row[column]) for row in rows)


def _table_grouping(grouping: str) -> str:
    """The table that backs a grouping; ``fine`` uses the root table's names."""
    _check_grouping(grouping)
    return "root" if grouping == "fine" else grouping


def load_table(grouping: str) -> dict[str, str]:
    """Category name -> group for ``uber`` or ``root`` (a fresh dict each call).

    ``fine`` has no table of its own: it returns each known name mapped to itself.
    """
    pairs = _read_pairs(_table_grouping(grouping))
    if grouping == "fine":
        return {name: name for name, _ in pairs}
    return dict(pairs)


def normalise(name: str) -> str:
    """The loose form names are matched by when the exact (stripped) name is unknown."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", name)).strip().casefold()


def _lookup_one(name: object, table: dict[str, str], loose: dict[str, str]) -> str | None:
    if not isinstance(name, str):
        return None  # NaN or another non-text value: no category to look up
    stripped = name.strip()
    if stripped in table:
        return table[stripped]
    return loose.get(normalise(stripped))


def group_categories(names: pd.Series | np.ndarray, grouping: str) -> tuple[np.ndarray, int]:
    """The group label of each row, and how many rows had a name the table lacks (-> ``OTHER``).

    ``fine`` returns the names unchanged (as an object array) and a count of 0. Work is done
    once per distinct name, then spread to rows by index, so large inputs stay fast.
    """
    _check_grouping(grouping)
    values = names.to_numpy(dtype=object) if isinstance(names, pd.Series) else np.asarray(names, dtype=object)
    if grouping == "fine":
        return values.copy(), 0
    table = load_table(grouping)
    loose = {normalise(name): group for name, group in table.items()}
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    found = [_lookup_one(name, table, loose) for name in uniques]
    unique_labels = np.array([OTHER if g is None else g for g in found], dtype=object)
    unknown_per_unique = np.array([g is None for g in found], dtype=bool)
    n_unknown = int(np.bincount(codes, minlength=len(uniques))[unknown_per_unique].sum()) if len(codes) else 0
    return unique_labels[codes], n_unknown


def group_names(grouping: str) -> list[str]:
    """Sorted distinct groups of a grouping's table (for ``fine``: the known category names)."""
    return sorted(set(load_table(grouping).values()))
