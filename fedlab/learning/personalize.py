"""Local fine-tuning before the test: each client adapts the shared model to its own earlier data.

This is the simplest personalisation in federated learning (FedAvg, then a few local epochs on the
device): the data never leaves the client, and the per-user Markov baseline gets the same history.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from fedlab.learning.model import loss_fn

FINE_TUNE_SPLITS = ("train", "val")  # everything before the client's test part, as the baselines see


def client_history(data, client: int, features: tuple[str, ...]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One client's training and validation sequences together (its check-ins before the test part)."""
    parts = [data.split(name).client(client) for name in FINE_TUNE_SPLITS]
    inputs = {f: np.concatenate([x[f] for x, _ in parts]) for f in features}
    return inputs, np.concatenate([y for _, y in parts])


def personalized_probs(
    model: tf.keras.Model,
    data,
    *,
    features: tuple[str, ...],
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    train_only: tuple[str, ...] | None = None,
    on_client: Callable[[tf.keras.Model, int], None] | None = None,
) -> tuple[dict, dict]:
    """Per client: start from the shared weights, run `epochs` of plain SGD on its own history, predict its
    test sequences. Returns (probabilities, targets) by client id; the model ends with the shared weights.
    `train_only` names the layers that learn (Federated Reconstruction's user part); None: every trainable one.
    `on_client(model, i)` is called with each client's adapted model, after its test sequences are predicted.

    Plain SGD keeps no state, so one compiled model serves every client (compiling per client leaks).
    """
    shared = model.get_weights()
    frozen = [la for la in model.layers if train_only is not None and la.trainable and la.name not in train_only]
    for layer in frozen:
        layer.trainable = False
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=learning_rate), loss=loss_fn())
    tf.keras.utils.set_random_seed(seed)
    probs, targets = {}, {}
    try:
        for i, client in enumerate(data.client_ids):
            test_inputs, test_targets = data.test.client(i)
            if len(test_targets) == 0:
                continue
            model.set_weights(shared)
            inputs, labels = client_history(data, i, features)
            if len(labels):
                model.fit(inputs, labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
            logits = model.predict_on_batch({f: test_inputs[f] for f in features})
            probs[client], targets[client] = tf.nn.softmax(logits).numpy(), test_targets
            if on_client is not None:
                on_client(model, i)
    finally:
        model.set_weights(shared)
        for layer in frozen:
            layer.trainable = True
    return probs, targets
