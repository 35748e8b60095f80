"""The federated wiring, in one place: TFF model, FedAvg and evaluation processes, client datasets."""
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
class Processes:
    learning: tff.learning.templates.LearningProcess
    evaluation: tff.learning.templates.LearningProcess


def build_processes(spec: ModelSpec, config: ExperimentConfig, *, clients_per_round: int) -> Processes:
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
    return Processes(learning=learning, evaluation=evaluation)


def client_dataset(inputs: dict[str, np.ndarray], targets: np.ndarray, spec: ModelSpec, *,
                   batch_size: int, epochs: int = 1, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """One client's sequences as batches; shuffled per epoch for training, in order for evaluation."""
    features = collections.OrderedDict((f, inputs[f]) for f in spec.features)
    ds = tf.data.Dataset.from_tensor_slices((features, targets))
    if shuffle_seed is not None:
        ds = ds.shuffle(max(len(targets), 1), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    return ds.repeat(epochs) if epochs > 1 else ds


def train_metrics(output) -> tuple[float, float]:
    train = output.metrics["client_work"]["train"]
    return float(train["loss"]), float(train["accuracy"])


def eval_metrics(output) -> tuple[float, float]:
    current = output.metrics["client_work"]["eval"]["current_round_metrics"]
    return float(current["loss"]), float(current["accuracy"])
