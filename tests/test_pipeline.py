import numpy as np
import pandas as pd
import pytest

from fedlab.config import DataConfig
from fedlab.data import sequences
from fedlab.data.features import local_time, time_features
from fedlab.data.pipeline import load_and_prepare, prepare, select_clients
from fedlab.errors import DataError


def _frame(user_counts: dict[str, int], categories=("Bar", "Office", "Park")) -> pd.DataFrame:
    """One row per check-in, an hour apart per user, categories cycling."""
    rows = []
    for user, count in user_counts.items():
        for k in range(count):
            rows.append(
                {
                    "user": user,
                    "venue": f"v{k % 4}",
                    "category_id": "c",
                    "category": categories[k % len(categories)],
                    "latitude": 40.7 + k * 1e-3,
                    "longitude": -74.0,
                    "tz_offset": -240,
                    "utc_time": pd.Timestamp("2012-04-03 12:00") + pd.Timedelta(hours=k),
                }
            )
    return pd.DataFrame(rows)


def test_split_is_64_16_20_in_time_order():
    split = sequences.chronological_split(np.zeros(100, dtype=np.int32))
    assert (split == sequences.TRAIN).sum() == 64
    assert (split == sequences.VAL).sum() == 16
    assert (split == sequences.TEST).sum() == 20
    assert np.all(np.diff(split) >= 0)  # train, then validation, then test


def test_windows_do_not_cross_segments_and_drop_tails():
    segments = np.array([0] * 7 + [1] * 3 + [2] * 4)
    starts = sequences.window_starts(segments, length=3, stride=3)
    assert starts.tolist() == [0, 3, 7, 10]  # 7 rows -> 2 windows (tail of 1 dropped); 3 -> 1; 4 -> 1


def test_sliding_windows_with_stride():
    starts = sequences.window_starts(np.zeros(6, dtype=np.int32), length=3, stride=1)
    assert starts.tolist() == [0, 1, 2, 3]


def test_top_k_users_by_count_ties_by_id():
    users = pd.Series(["b", "a", "a", "c", "c", "b", "d"])
    assert select_clients(users, 2).tolist() == ["a", "b"]
    assert select_clients(users, None).tolist() == ["a", "b", "c", "d"]


def test_no_test_checkin_in_train_or_validation():
    frame = _frame({"u1": 60, "u2": 45})
    data = prepare(frame, DataConfig(n=5, grouping="fine", top_users=None))
    for i in range(len(data.client_ids)):
        # Sequences carry the hour index of each check-in in clock features; use latitude, unique per row.
        train_lat = set(np.round(data.train.client(i)[0]["latitude"].ravel(), 6))
        val_lat = set(np.round(data.val.client(i)[0]["latitude"].ravel(), 6))
        test_lat = set(np.round(data.test.client(i)[0]["latitude"].ravel(), 6))
        assert not test_lat & (train_lat | val_lat)
        assert max(train_lat) < min(test_lat)


def test_targets_are_the_next_category():
    frame = _frame({"u1": 40})
    data = prepare(frame, DataConfig(n=4, grouping="fine", top_users=None))
    inputs, targets = data.train.client(0)
    # categories cycle Bar, Office, Park: the next category is the input shifted by one
    names = np.array(data.class_names)
    for x, y in zip(inputs["cat_id"], targets):
        assert list(names[x[1:]]) == list(names[y[:-1]])


def test_sequence_counts_match_chunking():
    frame = _frame({"u1": 100})
    data = prepare(frame, DataConfig(n=17, grouping="fine", top_users=None))
    assert (len(data.train), len(data.val), len(data.test)) == (64 // 17, 16 // 17, 20 // 17)


def test_numeric_statistics_come_from_training_rows_only():
    frame = _frame({"u1": 100})
    data = prepare(frame, DataConfig(n=5, grouping="fine", top_users=None))
    mean_lat, _ = data.numeric_stats["latitude"]
    assert mean_lat == pytest.approx(40.7 + np.mean(np.arange(64)) * 1e-3, abs=1e-4)


def test_local_time_adds_the_offset():
    utc = pd.Series(pd.to_datetime(["2012-04-03 18:00"]))
    assert local_time(utc, pd.Series([-240]))[0] == pd.Timestamp("2012-04-03 14:00")


def test_time_features_are_cyclic_and_flag_weekends():
    local = pd.Series(pd.to_datetime(["2012-04-07 06:00", "2012-04-09 18:00"]))  # Saturday, Monday
    feats = time_features(local)
    assert feats["is_weekend"].tolist() == [1.0, 0.0]
    assert feats["clock_sin"][0] == pytest.approx(1.0)  # 06:00 is a quarter of the day
    assert feats["clock_cos"][1] == pytest.approx(0.0, abs=1e-6)
    assert feats["week_day_sin"].min() >= -1 and feats["week_day_sin"].max() <= 1


def test_groupings_change_the_classes(small_city):
    fine = prepare(small_city, DataConfig(grouping="fine", top_users=None))
    root = prepare(small_city, DataConfig(grouping="root", top_users=None))
    assert len(root.class_names) < len(fine.class_names)
    assert set(root.class_names) <= {
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


def test_iid_reshuffle_keeps_client_sizes(small_city):
    natural = prepare(small_city, DataConfig(top_users=None))
    iid = prepare(small_city, DataConfig(top_users=None, iid=True))
    assert natural.train.client_sizes().tolist() == iid.train.client_sizes().tolist()
    assert not np.array_equal(natural.train.targets, iid.train.targets)
    assert sorted(map(tuple, natural.train.targets)) == sorted(map(tuple, iid.train.targets))


def test_n_longer_than_every_user_is_a_clear_error():
    with pytest.raises(DataError, match="N=200"):
        prepare(_frame({"u1": 30}), DataConfig(n=200))


def test_empty_frame_is_a_clear_error():
    with pytest.raises(DataError):
        prepare(_frame({"u1": 30}).iloc[:0], DataConfig())


def test_synthetic_default_gives_clients_and_sequences():
    data = load_and_prepare(DataConfig(top_users=50))
    assert data.summary["clients"] == 50
    assert data.summary["train_sequences"] > data.summary["val_sequences"] > 0
    assert len(data.class_names) > 5


def test_real_sample_file(real_sample_path):
    data = load_and_prepare(DataConfig(data=str(real_sample_path), grouping="root"))
    assert data.summary["users"] == 160
    assert data.summary["clients"] == 100
    assert data.summary["other_rows"] == 0
    assert 5 <= len(data.class_names) <= 10


def test_stride_multiplies_training_sequences_only():
    frame = _frame({"u1": 200})
    chunks = prepare(frame, DataConfig(n=9, grouping="fine", top_users=None))
    sliding = prepare(frame, DataConfig(n=9, grouping="fine", top_users=None, stride=1))
    assert len(sliding.train) == 128 - 9 + 1 > len(chunks.train)
    assert len(sliding.test) == len(chunks.test) and len(sliding.val) == len(chunks.val)
