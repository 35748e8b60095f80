"""Local fine-tuning before the test: each client adapts the shared model to its own earlier check-ins."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fedlab.config import ExperimentConfig
from fedlab.errors import ConfigError
from fedlab.pipeline import SplitArrays

STEPS, CLASSES = 4, 3


def _split(per_client: list[tuple[int, int]]) -> SplitArrays:
    """Sequences whose inputs and targets are all one class, `count` of them per client: (class, count)."""
    targets = np.concatenate([np.full((count, STEPS), label, np.int32) for label, count in per_client])
    sizes = [count for _, count in per_client]
    return SplitArrays(inputs={"cat_id": targets.copy()}, targets=targets,
                       offsets=np.concatenate([[0], np.cumsum(sizes)]))


def _two_clients_with_opposite_habits():
    """Client a only ever visits class 0, client b only class 2; their test parts keep the habit."""
    return SimpleNamespace(client_ids=("a", "b"), train=_split([(0, 12), (2, 12)]), val=_split([(0, 4), (2, 4)]),
                           test=_split([(0, 2), (2, 2)]),
                           split=lambda name: {"train": data.train, "val": data.val}[name])


data = _two_clients_with_opposite_habits()


def _shared_model():
    """A model that has learnt nothing yet about either client, with fixed initial weights."""
    import tensorflow as tf

    from fedlab.model import ModelSpec, build_model

    tf.keras.utils.set_random_seed(0)
    spec = ModelSpec(features=("cat_id",), steps=STEPS, num_classes=CLASSES, vocab_sizes=(("cat_id", CLASSES),),
                     numeric_stats=(), gru_units=4, dropout=0.0, embedding_dim=4)
    return build_model(spec)


def test_each_client_moves_towards_its_own_history():
    from fedlab.personalize import personalized_probs

    model = _shared_model()
    probs, targets = personalized_probs(model, data, features=("cat_id",), epochs=10, learning_rate=0.5,
                                        batch_size=4, seed=0)
    assert set(probs) == {"a", "b"}
    assert (probs["a"].argmax(-1) == 0).all() and (probs["b"].argmax(-1) == 2).all()
    np.testing.assert_array_equal(targets["b"], data.test.client(1)[1])


def test_fine_tuning_leaves_the_shared_model_as_it_was():
    from fedlab.personalize import personalized_probs

    model = _shared_model()
    before = [w.copy() for w in model.get_weights()]
    personalized_probs(model, data, features=("cat_id",), epochs=1, learning_rate=0.5, batch_size=4, seed=0)
    for kept, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(kept, now)


@pytest.mark.parametrize("changes", [{"personalize_epochs": -1}, {"personalize_epochs": 1.5},
                                     {"personalize_lr": 0}, {"personalize_lr": float("nan")}])
def test_bad_fine_tuning_settings_are_refused(changes):
    with pytest.raises(ConfigError, match="fine-tuning"):
        ExperimentConfig(**changes)
