"""The user-habit feature: each check-in sees only its own user's transitions that already happened."""

import numpy as np
import pandas as pd
import pytest

from fedlab.config import DataConfig
from fedlab.data.features import user_habits
from fedlab.data.pipeline import prepare

BEFORE_TEST = np.array([True, True, True, True, False, False])


def _habits(cats, codes=None, before_test=None, classes=3):
    cats = np.array(cats)
    codes = np.zeros(len(cats), np.int32) if codes is None else np.array(codes)
    before_test = np.ones(len(cats), bool) if before_test is None else np.array(before_test)
    out = user_habits(cats, codes, before_test, classes)
    return out[:, :classes], out[:, classes]


def test_a_checkin_sees_only_transitions_already_made():
    shares, log_count = _habits([0, 1, 0, 2, 0])
    np.testing.assert_allclose(shares[0], [0, 0, 0])  # nothing before the first check-in
    np.testing.assert_allclose(shares[2], [0, 1, 0])  # 0 -> 1 happened; its own 0 -> 2 has not
    np.testing.assert_allclose(shares[4], [0, 0.5, 0.5])  # 0 -> 1 and 0 -> 2
    np.testing.assert_allclose(log_count[[0, 2, 4]], np.log1p([0, 1, 2]), rtol=1e-6)


def test_test_checkins_see_the_whole_history_before_the_test_and_no_test_transition():
    # history 0 1 0 1 | test 0 0: the test rows see 0 -> 1 twice, never 1 -> 0 into the test nor 0 -> 0 inside it
    shares, log_count = _habits([0, 1, 0, 1, 0, 0], before_test=BEFORE_TEST)
    np.testing.assert_allclose(shares[4], [0, 1, 0])
    np.testing.assert_allclose(shares[5], [0, 1, 0])
    assert log_count[4] == log_count[5] == pytest.approx(np.log1p(2))


def test_clients_do_not_see_each_other():
    shares, _ = _habits([0, 1, 0, 2, 0], codes=[0, 0, 1, 1, 1])
    np.testing.assert_allclose(shares[2], [0, 0, 0])  # client 1's first check-in: client 0's 0 -> 1 is not its own
    np.testing.assert_allclose(shares[4], [0, 0, 1])


def test_shares_sum_to_one_where_there_is_history():
    rng = np.random.default_rng(0)
    shares, log_count = _habits(rng.integers(0, 5, 200), codes=np.repeat([0, 1], 100), classes=5)
    seen = log_count > 0
    np.testing.assert_allclose(shares[seen].sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(shares[~seen] == 0)


def _frame(count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": "u1",
            "venue": "v",
            "category_id": "c",
            "category": [("Bar", "Office", "Park")[k % 3] for k in range(count)],
            "latitude": 40.7,
            "longitude": -74.0,
            "tz_offset": 0,
            "utc_time": pd.Timestamp("2012-04-03") + pd.to_timedelta(np.arange(count), unit="h"),
        }
    )


def test_prepared_sequences_carry_habits_only_when_asked():
    config = DataConfig(n=5, grouping="fine", top_users=None)
    assert "user_habits" not in prepare(_frame(100), config).train.inputs
    data = prepare(_frame(100), config, habits=True)
    habits = data.test.inputs["user_habits"]
    assert habits.shape == (len(data.test), 4, len(data.class_names) + 1)
    # Categories cycle Bar, Office, Park, so the history says: after a category comes the next in the cycle.
    names = np.array(data.class_names)
    after = {"Bar": "Office", "Office": "Park", "Park": "Bar"}
    expected = [[names.tolist().index(after[names[c]]) for c in row] for row in data.test.inputs["cat_id"]]
    np.testing.assert_array_equal(habits[..., :-1].argmax(-1), expected)


def test_a_model_with_habits_saves_and_reloads(tmp_path):
    import tensorflow as tf

    from fedlab.learning.model import ModelSpec, build_model

    spec = ModelSpec(
        features=("cat_id", "user_habits"),
        steps=4,
        num_classes=3,
        vocab_sizes=(("cat_id", 3),),
        numeric_stats=(),
        gru_units=4,
        dropout=0.0,
        embedding_dim=2,
    )
    model = build_model(spec)
    model.save(tmp_path / "model.keras")
    again = tf.keras.models.load_model(tmp_path / "model.keras")
    x = {"cat_id": np.zeros((2, 4), np.int32), "user_habits": np.random.default_rng(0).random((2, 4, 4), np.float32)}
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)
