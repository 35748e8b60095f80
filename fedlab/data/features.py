"""Per-check-in features, as in the study, computed on whole columns at once."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Periods of the cyclic encodings, as the study used them.
PERIODS = {"clock": 24.0, "day": 30.0, "month": 12.0, "week_day": 7.0}


def local_time(utc_time: pd.Series, tz_offset_minutes: pd.Series) -> pd.Series:
    """Local wall-clock time (UTC plus the row's offset); the study used UTC, which shifts every hour."""
    return utc_time + pd.to_timedelta(tz_offset_minutes.to_numpy(np.int64), unit="m")


def time_features(local: pd.Series) -> dict[str, np.ndarray]:
    """is_weekend and the eight sin/cos features of clock, day of month, month and weekday."""
    dt = local.dt
    weekday = dt.weekday.to_numpy()
    raw = {
        "clock": dt.hour.to_numpy() + dt.minute.to_numpy() / 60.0 + dt.second.to_numpy() / 3600.0,
        "day": dt.day.to_numpy().astype(np.float64),
        "month": dt.month.to_numpy().astype(np.float64),
        "week_day": weekday.astype(np.float64),
    }
    out = {"is_weekend": (weekday > 4).astype(np.float32)}
    for name, values in raw.items():
        angle = 2.0 * np.pi * values / PERIODS[name]
        out[f"{name}_sin"] = np.sin(angle).astype(np.float32)
        out[f"{name}_cos"] = np.cos(angle).astype(np.float32)
    return out


def dense_ids(values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense 0..V-1 codes in sorted order of the distinct values, and those values."""
    codes, uniques = pd.factorize(np.asarray(values), sort=True)
    return codes.astype(np.int32), np.asarray(uniques)


def user_habits(cat_ids: np.ndarray, client_codes: np.ndarray, before_test: np.ndarray, num_classes: int) -> np.ndarray:
    """Per check-in: the shares of next categories after its category in the user's own earlier transitions,
    and log(1 + how many there were), as (rows, num_classes + 1) float32.

    Rows must be sorted by (client, time). Only transitions inside the part before the test count, each
    from the moment it has happened; a test check-in sees the whole part before the test (what the per-user
    Markov baseline is fitted on), never another test transition. Each client can count this alone.
    """
    rows = len(cat_ids)
    following = np.append(cat_ids[1:], 0)
    counted = np.append((client_codes[1:] == client_codes[:-1]) & before_test[1:], False) & before_test
    steps = np.zeros((rows, num_classes), np.float32)
    steps[np.flatnonzero(counted), following[counted]] = 1.0
    # Group rows by (client, category) in time order; an exclusive running sum within a group counts the
    # transitions from that category that happened before each row.
    order = np.lexsort((np.arange(rows), cat_ids, client_codes))
    grouped = steps[order]
    running = np.cumsum(grouped, axis=0) - grouped
    key = client_codes[order].astype(np.int64) * num_classes + cat_ids[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if rows else np.zeros(0, np.int64)
    sizes = np.diff(np.append(starts, rows))
    running -= np.repeat(running[starts], sizes, axis=0)
    counts = np.empty_like(running)
    counts[order] = running
    total = counts.sum(axis=1, keepdims=True)
    return np.concatenate([counts / np.maximum(total, 1.0), np.log1p(total)], axis=1).astype(np.float32)
