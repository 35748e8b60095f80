"""The study's sequence model in plain Keras (no TFF here, so it is testable alone)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from fedlab.config import CATEGORICAL_FEATURES, EMBEDDED_FEATURES, HABIT_FEATURES, NUMERIC_FEATURES, ExperimentConfig

layers = tf.keras.layers
HABIT_GAIN = 3.0  # logits added for a category the user always went to next


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes the model's shape; built from the config and the data's vocabularies."""

    features: tuple[str, ...]
    steps: int  # n - 1 time steps
    num_classes: int
    vocab_sizes: tuple[tuple[str, int], ...]
    numeric_stats: tuple[tuple[str, float, float], ...]  # (feature, mean, std) of training check-ins
    gru_units: int
    dropout: float
    embedding_dim: int

    @classmethod
    def from_data(cls, config: ExperimentConfig, data) -> ModelSpec:
        numeric = [f for f in config.features if f in NUMERIC_FEATURES]
        return cls(
            features=config.features,
            steps=config.data.n - 1,
            num_classes=len(data.class_names),
            vocab_sizes=tuple((f, data.vocab_sizes[f]) for f in config.features if f in CATEGORICAL_FEATURES),
            numeric_stats=tuple((f, *data.numeric_stats[f]) for f in numeric),
            gru_units=config.gru_units,
            dropout=config.dropout,
            embedding_dim=config.embedding_dim,
        )

    @property
    def numeric_features(self) -> tuple[str, ...]:
        return tuple(f for f, _, _ in self.numeric_stats)


def input_signature(spec: ModelSpec) -> dict[str, tf.TensorSpec]:
    vocab = dict(spec.vocab_sizes)
    # A habit input is a vector per step: the next-category shares and a log count.
    return {
        f: tf.TensorSpec((None, spec.steps, spec.num_classes + 1), tf.float32, name=f)
        if f in HABIT_FEATURES
        else tf.TensorSpec((None, spec.steps), tf.int32 if f in vocab else tf.float32, name=f)
        for f in spec.features
    }


def build_model(spec: ModelSpec) -> tf.keras.Model:
    """Inputs per feature -> one-hot / embedding / standardised numbers -> GRU -> logits per step
    (plus, with user habits, a direct path from the habit shares to the logits)."""
    vocab = dict(spec.vocab_sizes)
    inputs = {f: layers.Input(shape=s.shape[1:], dtype=s.dtype, name=f) for f, s in input_signature(spec).items()}
    parts = []
    for feature in spec.features:
        if feature in EMBEDDED_FEATURES:
            parts.append(
                layers.Embedding(vocab[feature], spec.embedding_dim, name=f"{feature}_embedding")(inputs[feature])
            )
        elif feature in vocab:
            # One-hot per time step: a frozen identity embedding (CategoryEncoding stops at rank 2).
            parts.append(
                layers.Embedding(
                    vocab[feature],
                    vocab[feature],
                    embeddings_initializer="identity",
                    trainable=False,
                    name=f"{feature}_one_hot",
                )(inputs[feature])
            )
        elif feature in HABIT_FEATURES:
            parts.append(inputs[feature])  # already shares in [0, 1] and a small log count
    if spec.numeric_stats:
        # One (steps, 1) column per numeric feature, joined on the last axis.
        columns = [layers.Reshape((spec.steps, 1), name=f"{f}_column")(inputs[f]) for f in spec.numeric_features]
        stacked = columns[0] if len(columns) == 1 else layers.Concatenate(name="numeric")(columns)
        means = np.array([m for _, m, _ in spec.numeric_stats], np.float32)
        variances = np.array([s * s for _, _, s in spec.numeric_stats], np.float32)
        parts.append(layers.Normalization(mean=means, variance=variances, name="standardise")(stacked))
    merged = parts[0] if len(parts) == 1 else layers.Concatenate(name="per_step_features")(parts)
    hidden = layers.GRU(spec.gru_units, dropout=spec.dropout, return_sequences=True, name="gru")(merged)
    logits = layers.Dense(spec.num_classes, name="next_category")(hidden)
    for feature in spec.features:
        if feature in HABIT_FEATURES:
            # A direct path from the user's own next-category shares to the logits, starting as their Markov
            # chain (share -> logit of that category), so federated rounds refine it instead of finding it.
            # The (classes + 1, classes) identity is the diagonal plus a zero row for the log count.
            prior = layers.Dense(
                spec.num_classes,
                kernel_initializer=tf.keras.initializers.Identity(gain=HABIT_GAIN),
                name=f"{feature}_prior",
            )(inputs[feature])
            logits = layers.Add(name=f"{feature}_logits")([logits, prior])
    return tf.keras.Model(inputs=inputs, outputs=logits, name="next_category_gru")


def user_layer_names(spec: ModelSpec) -> tuple[str, ...]:
    """The layers that describe one user rather than people in general: the user_id embedding and each habit
    feature's direct path to the logits (what Federated Reconstruction keeps on the client by default)."""
    names = [f"{f}_embedding" for f in spec.features if f == "user_id"]
    return (*names, *(f"{f}_prior" for f in spec.features if f in HABIT_FEATURES))


def local_layer_names(spec: ModelSpec, part: str = "user") -> tuple[str, ...]:
    """The layers Federated Reconstruction keeps on the client for a `local_part` choice (config.LOCAL_PARTS)."""
    user = user_layer_names(spec)
    if part == "user-embedding":
        return tuple(n for n in user if n.endswith("_embedding"))
    if part == "habit-path":
        return tuple(n for n in user if n.endswith("_prior"))
    if part == "user+output":
        return (*user, "next_category")
    return user


def loss_fn() -> tf.keras.losses.Loss:
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def metrics_fn() -> list[tf.keras.metrics.Metric]:
    return [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
