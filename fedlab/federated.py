"""The federated wiring, in one place: TFF model, FedAvg and evaluation processes, client datasets.

The only module (with the TFF runtime modules) that imports TensorFlow Federated. Weights cross its
boundary as plain numpy lists in Keras `model.get_weights()` order; the learning process's state is
opaque outside it.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.config import ExperimentConfig
from fedlab.model import ModelSpec, build_model, input_signature, loss_fn, metrics_fn


def element_spec(spec: ModelSpec):
    return (input_signature(spec), tf.TensorSpec((None, spec.steps), tf.int32))


def make_model_fn(spec: ModelSpec, *, seed: int = 0):
    def model_fn() -> tff.learning.models.VariableModel:
        # A graph-level seed fixes the initial random ops; with GRU dropout above 0, TFF still draws masks
        # from a kernel shared by concurrent clients, so only dropout 0 repeats exactly.
        tf.random.set_seed(seed)
        return tff.learning.models.from_keras_model(build_model(spec), loss=loss_fn(),
                                                    input_spec=element_spec(spec), metrics=metrics_fn())
    return model_fn


def optimizer(name: str, learning_rate: float):
    """TFF's own functional optimizers (cheaper to serialise than Keras ones)."""
    if name == "adam":
        return tff.learning.optimizers.build_adam(learning_rate=learning_rate)
    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate)


def model_aggregator(config: ExperimentConfig, clients_per_round: int):
    """None (TFF's weighted mean), or DP-FedAvg with TFF's Gaussian aggregator at a fixed clipping norm."""
    if config.dp_clip is None:
        return None
    return tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
        noise_multiplier=config.dp_noise, clients_per_round=float(clients_per_round), clip=config.dp_clip)


@dataclass(frozen=True)
class WeightLayout:
    """Where each TFF variable (trainable ones first, then non-trainable) sits in Keras' get_weights() list,
    which orders weights by layer (a frozen one-hot embedding comes between trainable layers)."""

    keras_index: tuple[int, ...]
    trainable: int  # how many of them are trainable

    @classmethod
    def of(cls, model: tf.keras.Model) -> WeightLayout:
        position = {id(v): i for i, v in enumerate(model.weights)}
        ordered = model.trainable_weights + model.non_trainable_weights
        return cls(keras_index=tuple(position[id(v)] for v in ordered), trainable=len(model.trainable_weights))

    def to_tff(self, weights: list[np.ndarray]) -> tff.learning.models.ModelWeights:
        ordered = [weights[i] for i in self.keras_index]
        return tff.learning.models.ModelWeights(trainable=ordered[:self.trainable],
                                                non_trainable=ordered[self.trainable:])

    def to_keras(self, weights: tff.learning.models.ModelWeights) -> list[np.ndarray]:
        out: list = [None] * len(self.keras_index)
        for i, value in zip(self.keras_index, list(weights.trainable) + list(weights.non_trainable)):
            out[i] = np.array(value)
        return out


@dataclass(frozen=True)
class Processes:
    learning: tff.learning.templates.LearningProcess
    evaluation: tff.learning.templates.LearningProcess
    layout: WeightLayout


def build_processes(spec: ModelSpec, config: ExperimentConfig, *, clients_per_round: int) -> Processes:
    # The layout comes from a throwaway model built before tracing (tracing invalidates earlier Keras models).
    layout = WeightLayout.of(build_model(spec))
    model_fn = make_model_fn(spec, seed=config.seed)
    aggregator = model_aggregator(config, clients_per_round)
    optimizers = {"client_optimizer_fn": optimizer(config.client_optimizer, config.client_lr),
                  "server_optimizer_fn": optimizer(config.server_optimizer, config.server_lr)}
    if aggregator is None:
        learning = tff.learning.algorithms.build_weighted_fed_avg(model_fn, **optimizers)
    else:
        # DP bounds each client's influence, so clients weigh the same (TFF's unweighted FedAvg).
        learning = tff.learning.algorithms.build_unweighted_fed_avg(model_fn, model_aggregator=aggregator,
                                                                    **optimizers)
    # Evaluation iterates each client's batches in a loop: the same metrics as TFF's default dataset reduce,
    # at about a quarter of the worker's CPU time per client (`fedlab bench` reports validation seconds).
    evaluation = tff.learning.algorithms.build_fed_eval(
        model_fn, loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
    return Processes(learning=learning, evaluation=evaluation, layout=layout)


@dataclass(frozen=True)
class RoundResult:
    state: object  # the learning process's state after the round; pass it to the next round as it is
    weights: list[np.ndarray]  # the new global model, in Keras get_weights() order
    train_loss: float
    train_accuracy: float


# Each of the next three runs TFF computations: call them inside an active runtime (fedlab.runtime).
def initial_state(processes: Processes, weights: list[np.ndarray]) -> object:
    """The learning process's state holding these (Keras-ordered) global weights."""
    learning = processes.learning
    return learning.set_model_weights(learning.initialize(), processes.layout.to_tff(weights))


def run_round(processes: Processes, state: object, datasets: list[tf.data.Dataset]) -> RoundResult:
    """One FedAvg round on these clients' datasets."""
    output = processes.learning.next(state, datasets)
    train = output.metrics["client_work"]["train"]
    weights = processes.layout.to_keras(processes.learning.get_model_weights(output.state))
    return RoundResult(state=output.state, weights=weights, train_loss=float(train["loss"]),
                       train_accuracy=float(train["accuracy"]))


def evaluate(processes: Processes, weights: list[np.ndarray], datasets: list[tf.data.Dataset]) -> tuple[float, float]:
    """(loss, accuracy) of these (Keras-ordered) weights over all these clients' examples."""
    evaluation = processes.evaluation
    state = evaluation.set_model_weights(evaluation.initialize(), processes.layout.to_tff(weights))
    current = evaluation.next(state, datasets).metrics["client_work"]["eval"]["current_round_metrics"]
    return float(current["loss"]), float(current["accuracy"])


def forget_compiled_computations() -> None:
    """Drops what TFF's execution contexts compiled. TFF caches compiled computations in one class-wide LRU
    cache (128 entries) keyed by context, so every closed runtime's context and its compiled protos stayed
    alive: about 10-20 MB more resident memory after each run. Call it once a run's runtime is closed; a live
    context only compiles again on its next call."""
    from tensorflow_federated.python.core.impl.execution_contexts import compiler_pipeline  # no public handle

    compiler_pipeline.CompilerPipeline.compile.cache_clear()


def client_dataset(inputs: dict[str, np.ndarray], targets: np.ndarray, spec: ModelSpec, *,
                   batch_size: int, epochs: int = 1, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """One client's sequences as batches; shuffled per epoch for training, in order for evaluation."""
    features = collections.OrderedDict((f, inputs[f]) for f in spec.features)
    ds = tf.data.Dataset.from_tensor_slices((features, targets))
    if shuffle_seed is not None:
        ds = ds.shuffle(max(len(targets), 1), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.repeat(epochs) if epochs > 1 else ds
    return ds.with_options(lean_options())


def lean_options() -> tf.data.Options:
    """No default graph rewrites and no autotuning: a client's pipeline is a few small batches, and the worker
    would otherwise redo both for every client every round (5-7 % of its CPU per round, `fedlab bench`)."""
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    return options
