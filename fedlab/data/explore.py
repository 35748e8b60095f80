"""Summaries of a canonical check-in frame for the dashboard's Data page (pure pandas, vectorised).

Every function takes the frame fedlab.data.loader / fedlab.data.synthetic produce (columns user, venue,
category_id, category, latitude, longitude, tz_offset in minutes, utc_time as naive UTC) and
returns a small table that fedlab.results.charts turns into a figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedlab.data import categories
from fedlab.data.features import local_time
from fedlab.data.pipeline import select_clients

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
HOURS = tuple(range(24))


def overview(frame: pd.DataFrame) -> dict:
    """Rows, distinct users / venues / categories, and the first and last check-in (UTC)."""
    empty = frame.empty
    return {
        "rows": int(len(frame)),
        "users": int(frame["user"].nunique()),
        "venues": int(frame["venue"].nunique()),
        "categories": int(frame["category"].nunique()),
        "first_time": None if empty else frame["utc_time"].min(),
        "last_time": None if empty else frame["utc_time"].max(),
    }


def checkins_per_user(frame: pd.DataFrame) -> pd.Series:
    """Check-ins of each user, most active first (index: user id)."""
    counts = frame["user"].value_counts(sort=True)
    counts.index.name = "user"
    return counts.rename("checkins")


def category_distribution(frame: pd.DataFrame, grouping: str) -> pd.DataFrame:
    """Check-ins per category group (columns group, checkins, share), largest first.

    Names the grouping's table lacks are counted under categories.OTHER, as the model sees them.
    """
    groups, _ = categories.group_categories(frame["category"], grouping)
    counts = pd.Series(groups, dtype=object).value_counts(sort=False)
    out = pd.DataFrame({"group": counts.index.astype(str), "checkins": counts.to_numpy(np.int64)})
    # Ties by name so the order is stable from run to run.
    out = out.sort_values(["checkins", "group"], ascending=[False, True], kind="mergesort").reset_index(drop=True)
    total = out["checkins"].sum()
    out["share"] = out["checkins"] / total if total else 0.0
    return out


def hour_weekday_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Check-ins per local weekday (rows, Monday first) and local hour (columns 0..23).

    Local time is UTC plus the row's timezone offset: people's routines follow their own clock.
    """
    local = local_time(frame["utc_time"], frame["tz_offset"])
    table = pd.crosstab(local.dt.weekday.to_numpy(), local.dt.hour.to_numpy())
    table = table.reindex(index=range(7), columns=list(HOURS), fill_value=0).astype(np.int64)
    table.index = pd.Index(WEEKDAYS, name="weekday")
    table.columns = pd.Index(HOURS, name="hour")
    return table


def client_category_mix(
    frame: pd.DataFrame, grouping: str, top_users: int | None, max_clients: int = 40
) -> pd.DataFrame:
    """Share of each category group in each client's check-ins (rows sum to 1).

    Rows are the most active clients among the top-K users (most active first, at most
    `max_clients` of them so the heatmap stays readable); columns are the groups, most common
    overall first. Rows that differ a lot from each other mean the clients are non-IID.
    """
    chosen = select_clients(frame["user"], top_users)[:max_clients]
    rows = frame[frame["user"].isin(chosen)]
    groups, _ = categories.group_categories(rows["category"], grouping)
    table = pd.crosstab(rows["user"].to_numpy(), groups, normalize="index")
    column_order = pd.Series(groups, dtype=object).value_counts().index
    table = table.reindex(index=[u for u in chosen if u in table.index], columns=column_order, fill_value=0.0)
    table.index = pd.Index(table.index.astype(str), name="client")
    table.columns = pd.Index(table.columns.astype(str), name="group")
    return table


def map_sample(frame: pd.DataFrame, max_points: int = 5000, seed: int = 0, grouping: str | None = None) -> pd.DataFrame:
    """At most `max_points` check-ins drawn at random (seeded), for a light scatter map.

    Columns: user, longitude, latitude, category, and group when a grouping is given.
    """
    columns = ["user", "longitude", "latitude", "category"]
    sample = frame[columns]
    if len(sample) > max_points:
        picked = np.random.default_rng(seed).choice(len(sample), size=max_points, replace=False)
        sample = sample.iloc[np.sort(picked)]
    sample = sample.reset_index(drop=True)
    if grouping is not None:
        sample = sample.assign(group=categories.group_categories(sample["category"], grouping)[0])
    return sample
