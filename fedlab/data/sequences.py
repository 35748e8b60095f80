"""Chronological per-user split and cutting into fixed-length sequences, vectorised over all users.

Rows must already be sorted by (client, time); clients are given as a code array.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2


def segment_starts(codes: np.ndarray) -> np.ndarray:
    """Start index of each run of equal codes (codes are sorted, so each run is one group)."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    return np.concatenate([[0], change]).astype(np.int64)


def chronological_split(
    client_codes: np.ndarray, *, test_fraction: float = 0.2, val_fraction: float = 0.2
) -> np.ndarray:
    """Split code per row (TRAIN/VAL/TEST): per client, the last 20% is test and the last 20% of the
    rest is validation (64/16/20 as the study), with no shuffling, so no test check-in precedes training."""
    starts = segment_starts(client_codes)
    sizes = np.diff(np.append(starts, len(client_codes)))
    test_start = np.floor(sizes * (1.0 - test_fraction)).astype(np.int64)
    val_start = np.floor(test_start * (1.0 - val_fraction)).astype(np.int64)
    rank = np.arange(len(client_codes)) - np.repeat(starts, sizes)
    split = np.full(len(client_codes), TRAIN, dtype=np.int8)
    split[rank >= np.repeat(val_start, sizes)] = VAL
    split[rank >= np.repeat(test_start, sizes)] = TEST
    return split


def window_starts(segment_codes: np.ndarray, *, length: int, stride: int) -> np.ndarray:
    """Row index where each window of `length` rows begins, never crossing a segment boundary.

    Segments are runs of equal `segment_codes` (one client's one split). Incomplete tails are dropped.
    """
    starts = segment_starts(segment_codes)
    sizes = np.diff(np.append(starts, len(segment_codes)))
    counts = np.where(sizes >= length, (sizes - length) // stride + 1, 0)
    first = np.repeat(starts, counts)
    step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return first + step * stride


def window_rows(starts: np.ndarray, length: int) -> np.ndarray:
    """(windows, length) matrix of row indices."""
    return starts[:, None] + np.arange(length)[None, :]
