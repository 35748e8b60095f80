"""From a check-in table to per-client, model-ready sequences (no per-user Python loops)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedlab.data import categories, features, sequences
from fedlab.config import CATEGORICAL_FEATURES, HABIT_FEATURES, NUMERIC_FEATURES, DataConfig
from fedlab.errors import DataError


@dataclass(frozen=True)
class SplitArrays:
    """All sequences of one split, grouped by client: client i owns rows offsets[i]:offsets[i+1]."""

    inputs: dict[str, np.ndarray]  # feature -> (sequences, n-1)
    targets: np.ndarray  # (sequences, n-1) int32 next-category ids
    offsets: np.ndarray  # (clients + 1,)

    def __len__(self) -> int:
        return len(self.targets)

    def client(self, i: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return {k: v[lo:hi] for k, v in self.inputs.items()}, self.targets[lo:hi]

    def client_sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class SequenceData:
    config: DataConfig
    client_ids: tuple[str, ...]
    class_names: tuple[str, ...]
    vocab_sizes: dict[str, int]  # categorical feature -> vocabulary size
    numeric_stats: dict[str, tuple[float, float]]  # numeric feature -> (mean, std) of training check-ins
    train: SplitArrays
    val: SplitArrays
    test: SplitArrays
    history: dict[str, np.ndarray]  # client -> its category ids before its test part (for baselines)
    checkins: dict[str, int]  # client -> its number of check-ins
    summary: dict = field(default_factory=dict)

    def split(self, name: str) -> SplitArrays:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def select_clients(users: pd.Series, top_users: int | None) -> np.ndarray:
    """Ids of the top-K users by check-in count (ties by id, so the choice is stable)."""
    counts = users.value_counts()
    order = pd.DataFrame({"user": counts.index, "n": counts.to_numpy()}).sort_values(
        ["n", "user"], ascending=[False, True], kind="mergesort"
    )
    chosen = order["user"].to_numpy()
    return chosen if top_users is None else chosen[:top_users]


def prepare(
    frame: pd.DataFrame, config: DataConfig, *, skipped_rows: int = 0, habits: bool = False, seed: int = 0
) -> SequenceData:
    """Turn a canonical check-in frame (see fedlab.data.loader) into client sequences; with `habits`, the inputs
    also hold `user_habits` (see fedlab.data.features.user_habits), which costs (categories + 1) numbers per step.
    `seed` (the run's seed) deals the sequences to clients when `config.iid`; nothing else is random."""
    started = time.perf_counter()
    if frame.empty:
        raise DataError("the file holds no check-ins")
    chosen = select_clients(frame["user"], config.top_users)
    rows = frame[frame["user"].isin(chosen)]
    client_rank = pd.Series(np.arange(len(chosen)), index=chosen)
    client_codes = client_rank.reindex(rows["user"].to_numpy()).to_numpy()
    order = np.lexsort((rows["utc_time"].to_numpy(), client_codes))
    rows = rows.iloc[order].reset_index(drop=True)
    client_codes = client_codes[order].astype(np.int32)

    groups, other_rows = categories.group_categories(rows["category"], config.grouping)
    cat_ids, class_names = features.dense_ids(groups)
    columns = _feature_columns(rows, cat_ids, client_codes)
    split = sequences.chronological_split(client_codes)
    if habits:
        columns["user_habits"] = features.user_habits(cat_ids, client_codes, split != sequences.TEST, len(class_names))
    numeric_stats = _numeric_stats(columns, split == sequences.TRAIN)

    n_clients = len(chosen)
    stride = config.stride or config.n
    segment = client_codes.astype(np.int64) * 3 + split
    arrays = {}
    for code, name in enumerate(sequences.SPLITS):
        mask_rows = np.flatnonzero(split == code)
        # Sliding windows only multiply training sequences; validation and test stay non-overlapping
        # chunks, so every held-out check-in is scored once, whatever the stride.
        step = stride if name == "train" else config.n
        starts = sequences.window_starts(segment[mask_rows], length=config.n, stride=step)
        windows = (
            mask_rows[sequences.window_rows(starts, config.n)] if len(starts) else np.zeros((0, config.n), np.int64)
        )
        arrays[name] = _split_arrays(columns, cat_ids, windows, client_codes, n_clients)
    if config.iid:
        rng = np.random.default_rng(seed)
        arrays = {name: _iid_reshuffle(a, rng) for name, a in arrays.items()}

    if len(arrays["train"]) == 0 or len(arrays["test"]) == 0:
        raise DataError(
            f"no client has enough check-ins for sequences of N={config.n}; choose a smaller N or more users"
        )
    client_ids = tuple(str(u) for u in chosen)
    before_test = split != sequences.TEST
    history = _per_client(cat_ids[before_test], client_codes[before_test], n_clients, client_ids)
    checkins = dict(zip(client_ids, np.bincount(client_codes, minlength=n_clients).tolist()))
    vocab = {
        "cat_id": len(class_names),
        "user_id": n_clients,
        "venue_id": int(columns["venue_id"].max()) + 1,
        "orig_cat_id": int(columns["orig_cat_id"].max()) + 1,
    }
    summary = {
        "rows": int(len(frame)),
        "users": int(frame["user"].nunique()),
        "venues": int(frame["venue"].nunique()),
        "categories": int(frame["category"].nunique()),
        "groups": len(class_names),
        "other_rows": int(other_rows),
        "skipped_rows": int(skipped_rows),
        "first_time": frame["utc_time"].min().isoformat(),
        "last_time": frame["utc_time"].max().isoformat(),
        "clients": n_clients,
        "train_sequences": len(arrays["train"]),
        "val_sequences": len(arrays["val"]),
        "test_sequences": len(arrays["test"]),
    }
    summary["preprocess_seconds"] = round(time.perf_counter() - started, 4)
    return SequenceData(
        config=config,
        client_ids=client_ids,
        class_names=tuple(map(str, class_names)),
        vocab_sizes=vocab,
        numeric_stats=numeric_stats,
        history=history,
        checkins=checkins,
        summary=summary,
        **arrays,
    )


def _feature_columns(rows: pd.DataFrame, cat_ids: np.ndarray, client_codes: np.ndarray) -> dict[str, np.ndarray]:
    local = features.local_time(rows["utc_time"], rows["tz_offset"])
    columns = {
        "cat_id": cat_ids,
        "user_id": client_codes,
        "venue_id": features.dense_ids(rows["venue"])[0],
        "orig_cat_id": features.dense_ids(rows["category"])[0],
        "latitude": rows["latitude"].to_numpy(np.float32),
        "longitude": rows["longitude"].to_numpy(np.float32),
    }
    columns.update(features.time_features(local))
    return columns


def _numeric_stats(columns: dict[str, np.ndarray], train_rows: np.ndarray) -> dict[str, tuple[float, float]]:
    """Mean and std of each numeric feature over training check-ins only (no peeking at test)."""
    stats = {}
    for name in NUMERIC_FEATURES:
        values = columns[name][train_rows].astype(np.float64)
        std = float(values.std()) if len(values) else 1.0
        stats[name] = (float(values.mean()) if len(values) else 0.0, std if std > 1e-8 else 1.0)
    return stats


def _split_arrays(columns, cat_ids, windows, client_codes, n_clients) -> SplitArrays:
    inputs_rows = windows[:, :-1]
    inputs = {
        name: columns[name][inputs_rows].astype(np.int32 if name in CATEGORICAL_FEATURES else np.float32)
        for name in (*CATEGORICAL_FEATURES, *NUMERIC_FEATURES, *HABIT_FEATURES)
        if name in columns
    }
    owners = client_codes[windows[:, 0]] if len(windows) else np.zeros(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(owners, minlength=n_clients))])
    return SplitArrays(inputs=inputs, targets=cat_ids[windows[:, 1:]].astype(np.int32), offsets=offsets)


def _iid_reshuffle(split: SplitArrays, rng: np.random.Generator) -> SplitArrays:
    """Deal the same sequences to clients at random, keeping every client's size (removes heterogeneity)."""
    perm = rng.permutation(len(split))
    return SplitArrays(
        inputs={k: v[perm] for k, v in split.inputs.items()}, targets=split.targets[perm], offsets=split.offsets
    )


def _per_client(values: np.ndarray, codes: np.ndarray, n_clients: int, client_ids) -> dict[str, np.ndarray]:
    bounds = np.searchsorted(codes, np.arange(n_clients + 1))
    return {cid: values[bounds[i] : bounds[i + 1]] for i, cid in enumerate(client_ids)}


def load_frame(config: DataConfig) -> tuple[pd.DataFrame, int]:
    """The check-in table and how many bad rows were skipped; no path means the synthetic city."""
    if config.data is None:
        from fedlab.data.synthetic import generate_city

        return generate_city(), 0
    from fedlab.data.loader import load_checkins

    loaded = load_checkins(config.data, skip_bad_rows=config.skip_bad_rows)
    return loaded.frame, sum(loaded.skipped.values())


def load_and_prepare(config: DataConfig, *, habits: bool = False, seed: int = 0) -> SequenceData:
    """Load and prepare data for training (CLI and engine): unlike `prepare` alone, it also needs validation
    sequences, since training keeps the round with the lowest validation loss (and Keras refuses empty data)."""
    started = time.perf_counter()
    frame, skipped = load_frame(config)
    data = prepare(frame, config, skipped_rows=skipped, habits=habits, seed=seed)
    if len(data.val) == 0:
        raise DataError(
            f"no client has enough check-ins for a validation sequence of N={config.n} (validation is "
            "16% of each client's check-ins, just before its test part); choose a smaller N or more users"
        )
    data.summary["preprocess_seconds"] = round(time.perf_counter() - started, 4)
    return data
