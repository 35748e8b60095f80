"""Local fine-tuning before the test: each client adapts the shared model to its own earlier check-ins."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fedlab.config import ExperimentConfig
from fedlab.data.pipeline import SplitArrays
from fedlab.errors import ConfigError

STEPS, CLASSES = 4, 3


def _split(per_client: list[tuple[int, int]]) -> SplitArrays:
    """`count` sequences per client, (class, count): every input is class 1, every target the client's class.

    Both clients see the same inputs, so only a model fitted to one client can tell them apart.
    """
    targets = np.concatenate([np.full((count, STEPS), label, np.int32) for label, count in per_client])
    sizes = [count for _, count in per_client]
    return SplitArrays(
        inputs={"cat_id": np.ones_like(targets)}, targets=targets, offsets=np.concatenate([[0], np.cumsum(sizes)])
    )


@pytest.fixture(scope="module")
def data():
    """Client a always goes on to class 0, client b to class 2, in training, validation and test alike."""
    parts = {"train": _split([(0, 12), (2, 12)]), "val": _split([(0, 4), (2, 4)]), "test": _split([(0, 2), (2, 2)])}
    return SimpleNamespace(client_ids=("a", "b"), split=parts.__getitem__, **parts)


def _shared_model():
    """A model that has learnt nothing yet about either client, with fixed initial weights."""
    import tensorflow as tf

    from fedlab.learning.model import ModelSpec, build_model

    tf.keras.utils.set_random_seed(0)
    spec = ModelSpec(
        features=("cat_id",),
        steps=STEPS,
        num_classes=CLASSES,
        vocab_sizes=(("cat_id", CLASSES),),
        numeric_stats=(),
        gru_units=4,
        dropout=0.0,
        embedding_dim=4,
    )
    return build_model(spec)


def test_each_client_moves_towards_its_own_history(data):
    from fedlab.learning.personalize import personalized_probs

    model = _shared_model()
    shared = model.predict_on_batch({"cat_id": data.test.inputs["cat_id"]}).argmax(-1)
    assert len(set(shared.ravel())) == 1  # the shared model answers both clients alike
    probs, targets = personalized_probs(
        model, data, features=("cat_id",), epochs=10, learning_rate=0.5, batch_size=4, seed=0
    )
    assert set(probs) == {"a", "b"}
    assert (probs["a"].argmax(-1) == 0).all() and (probs["b"].argmax(-1) == 2).all()
    np.testing.assert_array_equal(targets["b"], data.test.client(1)[1])


def test_fine_tuning_leaves_the_shared_model_as_it_was(data):
    from fedlab.learning.personalize import personalized_probs

    model = _shared_model()
    before = [w.copy() for w in model.get_weights()]
    personalized_probs(model, data, features=("cat_id",), epochs=1, learning_rate=0.5, batch_size=4, seed=0)
    for kept, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(kept, now)


@pytest.mark.parametrize(
    "changes",
    [{"personalize_epochs": -1}, {"personalize_epochs": 1.5}, {"personalize_lr": 0}, {"personalize_lr": float("nan")}],
)
def test_bad_fine_tuning_settings_are_refused(changes):
    with pytest.raises(ConfigError, match="fine-tuning"):
        ExperimentConfig(**changes)
