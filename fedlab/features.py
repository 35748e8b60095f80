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
