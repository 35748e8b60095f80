"""The federated wiring, in one place: TFF model, FedAvg (or FedRecon) and evaluation processes, client datasets.

The only module (with the TFF runtime modules) that imports TensorFlow Federated. Weights cross its
boundary as plain numpy lists in Keras `model.get_weights()` order; the learning process's state is
opaque outside it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from fedlab.config import SHARDS, ExperimentConfig, training_path
from fedlab.learning import proximal, robust_aggregators, secure
from fedlab.learning.model import ModelSpec, build_model, input_signature, local_layer_names, loss_fn, metrics_fn


def element_spec(spec: ModelSpec):
    return (input_signature(spec), tf.TensorSpec((None, spec.steps), tf.int32))


def make_model_fn(spec: ModelSpec, *, seed: int = 0):
    def model_fn() -> tff.learning.models.VariableModel:
        # A graph-level seed fixes the initial random ops; with GRU dropout above 0, TFF still draws masks
        # from a kernel shared by concurrent clients, so only dropout 0 repeats exactly.
        tf.random.set_seed(seed)
        return tff.learning.models.from_keras_model(
            build_model(spec), loss=loss_fn(), input_spec=element_spec(spec), metrics=metrics_fn()
        )

    return model_fn


def optimizer(name: str, learning_rate: float, *, momentum: float | None = None):
    """TFF's own functional optimizers (cheaper to serialise than Keras ones)."""
    builders = {
        "adam": tff.learning.optimizers.build_adam,
        "yogi": tff.learning.optimizers.build_yogi,
        "adagrad": tff.learning.optimizers.build_adagrad,
    }
    if name in builders:
        return builders[name](learning_rate=learning_rate)
    return tff.learning.optimizers.build_sgdm(
        learning_rate=learning_rate, momentum=momentum if name == "sgdm" else None
    )


# Tensors of at most this many values are sent as float32 even when compressing: quantising them saves a few
# bytes at most, and their min and max (sent with every quantised tensor) would cost more than that.
QUANTIZE_THRESHOLD = 256


def model_aggregator(config: ExperimentConfig, clients_per_round: int):
    """The aggregator of the clients' model updates: None (TFF's weighted mean), a defence (TFF's robust factories,
    or median, trimmed mean, multi-Krum and norm bounding from `robust_aggregators`), TFF's secure aggregator
    (fedlab.learning.secure), DP-FedAvg (TFF's Gaussian aggregator at a fixed clipping norm), or uniform quantisation
    after a Hadamard rotation."""
    if config.defense in robust_aggregators.DEFENSES:
        return robust_aggregators.defense_factory(config, clients_per_round)
    if config.defense != "none":
        return defense_aggregator(config.defense, clip_norm=config.clip_norm)
    if config.secure_aggregation:
        return secure.aggregator(weighted=config.dp_clip is None)
    compressed = compressed_sum(config.compression_bits) if config.compression_bits else None
    if config.dp_clip is not None:
        # TFF's DifferentiallyPrivateFactory.gaussian_fixed, with the clipped updates compressed on their way up.
        query = tfp.NormalizedQuery(
            tfp.GaussianSumQuery(l2_norm_clip=config.dp_clip, stddev=config.dp_clip * config.dp_noise),
            denominator=float(clients_per_round),
        )
        return tff.aggregators.DifferentiallyPrivateFactory(query, record_aggregation_factory=compressed)
    return None if compressed is None else tff.aggregators.MeanFactory(compressed)


def defense_aggregator(defense: str, *, clip_norm: float | None):
    """TFF's robust factories around the weighted mean: `robust_aggregator` with its adaptive zeroing and clipping
    (all, or one of them), or `clipping_factory` at a fixed norm."""
    if defense == "clip" and clip_norm is not None:
        return tff.aggregators.clipping_factory(clip_norm, tff.aggregators.MeanFactory())
    return tff.learning.robust_aggregator(
        zeroing=defense in ("zeroing", "robust"), clipping=defense in ("clip", "robust")
    )


def defense_counts(measurements) -> tuple[int, int]:
    """(updates clipped, updates zeroed) this round, from the aggregator's own `clipped_count` and `zeroed_count`
    measurements wherever TFF nests them (0 for a defence that does not do one of them)."""
    found = {"clipped_count": 0, "zeroed_count": 0}

    def walk(node) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in found:
                    found[key] += int(value)
                else:
                    walk(value)

    walk(measurements)
    return found["clipped_count"], found["zeroed_count"]


def compressed_sum(bits: int):
    """A sum of updates quantised to `bits` per value after a random Hadamard rotation (which spreads each
    tensor's values evenly, so uniform quantisation loses less)."""
    quantized = tff.aggregators.EncodedSumFactory.quantize_above_threshold(
        quantization_bits=bits, threshold=QUANTIZE_THRESHOLD
    )
    return tff.aggregators.HadamardTransformFactory(quantized)


# -- communication: bytes a round sends --------------------------------------------------------------------------
# TFF's aggregators report no byte counts (their measurements are clipping norms and counts), so the bytes are the
# encoded size that the aggregator's settings determine, computed from the real weights' shapes: float32 values
# take 4 bytes; a compressed tensor is flattened and zero-padded to a
# power of two by the Hadamard rotation, then, when longer than QUANTIZE_THRESHOLD, quantised to `bits` per value
# and bit-packed by TFF's encoder into 28 of every 32 bits, plus its min and max (two float32).
PACKED_BITS_PER_WORD = 28
# Per-weight slots of each client optimizer's state, which MIME-lite's server broadcasts with the model.
OPTIMIZER_SLOTS = {"sgd": 0, "adam": 2}


def model_bytes(weights: list[np.ndarray]) -> int:
    """The model the server broadcasts to one client: every weight, trainable or not, as it is stored."""
    return int(sum(np.asarray(w).nbytes for w in weights))


def tensor_update_bytes(size: int, bits: int) -> int:
    """Bytes one client sends for one float32 tensor of `size` values, at `bits` per value (0 = uncompressed)."""
    if not bits:
        return 4 * size
    padded = 1 << max(size - 1, 0).bit_length()  # the Hadamard rotation's power-of-two length
    if padded <= QUANTIZE_THRESHOLD:
        return 4 * padded
    return 4 * math.ceil(padded * bits / PACKED_BITS_PER_WORD) + 8


def update_bytes(trainable_sizes: list[int], config: ExperimentConfig) -> int:
    """Bytes one reporting client sends up: its model update (only trainable weights change), after compression;
    MIME-lite clients also send their full-batch gradient (uncompressed: TFF's default mean aggregator)."""
    update = sum(tensor_update_bytes(n, config.compression_bits) for n in trainable_sizes)
    gradient = 4 * sum(trainable_sizes) if config.algorithm == "mime" else 0
    return update + gradient + (secure.extra_bytes(up=True) if config.secure_aggregation else 0)


def download_bytes(weights: list[np.ndarray], trainable_sizes: list[int], config: ExperimentConfig) -> int:
    """Bytes the server sends one sampled client: the model, plus MIME-lite's optimizer state."""
    state = 4 * OPTIMIZER_SLOTS[config.client_optimizer] * sum(trainable_sizes) if config.algorithm == "mime" else 0
    return model_bytes(weights) + state + (secure.extra_bytes(up=False) if config.secure_aggregation else 0)


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
        return tff.learning.models.ModelWeights(
            trainable=ordered[: self.trainable], non_trainable=ordered[self.trainable :]
        )

    def trainable_sizes(self, weights: list[np.ndarray]) -> list[int]:
        """The number of values of each trainable weight (what an update carries), from Keras-ordered weights."""
        return [int(np.asarray(weights[i]).size) for i in self.keras_index[: self.trainable]]

    def to_keras(self, weights: tff.learning.models.ModelWeights, base: list | None = None) -> list[np.ndarray]:
        """Keras-ordered weights; with `base` (a full Keras list), the weights this layout does not cover (the
        local part under Federated Reconstruction) are taken from it."""
        out: list = [None] * len(self.keras_index) if base is None else list(base)
        for i, value in zip(self.keras_index, list(weights.trainable) + list(weights.non_trainable)):
            out[i] = np.array(value)
        return out

    def shared(self, weights: list[np.ndarray]) -> list[np.ndarray]:
        """What the server holds and broadcasts of these Keras-ordered weights: the ones this layout covers."""
        return [weights[i] for i in self.keras_index]


@dataclass(frozen=True)
class Processes:
    learning: tff.learning.templates.LearningProcess
    evaluation: tff.learning.templates.LearningProcess
    layout: WeightLayout
    local_layers: tuple[str, ...] = ()  # layers kept on the clients (Federated Reconstruction); () = none
    shards: bool = False  # a TFF client is a shard of users (fedlab.learning.sharded), not one user


def build_processes(spec: ModelSpec, config: ExperimentConfig, *, clients_per_round: int, evaluation=None) -> Processes:
    """The run's learning and evaluation processes. `evaluation`: one `build_evaluation(spec)` built before, reused
    (it is the same for every algorithm; ignored by FedRecon, whose validation re-learns the local part)."""
    with _without_bitpacking_note():
        if config.reconstruction:
            return reconstruction_processes(spec, config, clients_per_round=clients_per_round)
        # The layout comes from a throwaway model built before tracing (tracing invalidates earlier Keras models).
        layout = WeightLayout.of(build_model(spec))
        learning = learning_process(make_model_fn(spec, seed=config.seed), config, clients_per_round)
    return Processes(
        learning=learning,
        evaluation=evaluation or build_evaluation(spec),
        layout=layout,
        shards=training_path(config)[0] == SHARDS,
    )


class _BitpackingNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "temporarily allocate extra memory" not in record.getMessage()


@contextlib.contextmanager
def _without_bitpacking_note() -> Iterator[None]:
    """TF Model Optimization's bit packing (TFF's compression) warns on the root logger that it may use extra memory,
    once per tensor each time it is traced: a screenful per compressed run, and nothing the user can act on."""
    note, root = _BitpackingNote(), logging.getLogger()
    root.addFilter(note)
    try:
        yield
    finally:
        root.removeFilter(note)


def build_evaluation(spec: ModelSpec):
    """TFF's federated evaluation of this model shape. It is handed the weights to score (`evaluate`), so the
    algorithm and the seed play no part in it."""
    # It iterates each client's batches in a loop: the same metrics as TFF's default dataset reduce, at about a
    # quarter of the worker's CPU time per client (`fedlab bench` reports validation seconds).
    return tff.learning.algorithms.build_fed_eval(
        make_model_fn(spec), loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR
    )


def learning_process(model_fn, config: ExperimentConfig, clients_per_round: int):
    """TFF's FedAvg, FedProx or MIME-lite with this config's optimizers and aggregator; plain FedAvg trains shards
    of users per TFF client call (`fedlab.config.training_path`)."""
    client = optimizer(config.client_optimizer, config.client_lr)
    server = optimizer(config.server_optimizer, config.server_lr, momentum=config.server_momentum)
    if training_path(config)[0] == SHARDS:
        from fedlab.learning.sharded import build_sharded_fed_avg

        return build_sharded_fed_avg(model_fn, client_optimizer=client, server_optimizer=server)
    aggregator = model_aggregator(config, clients_per_round)
    # DP bounds each client's influence, so clients weigh the same (TFF's unweighted builders).
    weighted = config.dp_clip is None
    extra = {} if aggregator is None else {"model_aggregator": aggregator}
    algorithms = tff.learning.algorithms
    if config.algorithm == "fedprox":  # fedlab's own: TFF 0.87's proximal term has the wrong sign (proximal.py)
        return proximal.build_fed_prox(
            model_fn,
            mu=config.prox_mu,
            client_optimizer=client,
            server_optimizer=server,
            weighted=weighted,
            model_aggregator=aggregator,
        )
    if config.algorithm == "mime":
        # MIME-lite's base optimizer is the client optimizer; the server keeps its state and broadcasts it.
        build = algorithms.build_weighted_mime_lite if weighted else algorithms.build_unweighted_mime_lite
        return build(model_fn, base_optimizer=client, server_optimizer=server, **extra)
    build = algorithms.build_weighted_fed_avg if weighted else algorithms.build_unweighted_fed_avg
    return build(model_fn, client_optimizer_fn=client, server_optimizer_fn=server, **extra)


@dataclass(frozen=True)
class RoundResult:
    state: object  # the learning process's state after the round; pass it to the next round as it is
    weights: list[np.ndarray]  # the new global model, in Keras get_weights() order
    train_loss: float
    train_accuracy: float
    bytes_down: int  # the model sent to every sampled client
    bytes_up: int  # every reporting client's update, after compression
    bytes_saved: int  # what compression spared of those updates
    clipped: int = 0  # updates the defence scaled down (its aggregator's `clipped_count`)
    zeroed: int = 0  # updates the defence dropped (its aggregator's `zeroed_count`)


# Each of the next three runs TFF computations: call them inside an active runtime (fedlab.learning.runtime).
def initial_state(processes: Processes, weights: list[np.ndarray]) -> object:
    """The learning process's state holding these (Keras-ordered) global weights."""
    learning = processes.learning
    state = learning.set_model_weights(learning.initialize(), processes.layout.to_tff(weights))
    return ReconstructionState(state, tuple(weights)) if processes.local_layers else state


def run_round(
    processes: Processes,
    state: object,
    datasets: list[tf.data.Dataset],
    *,
    config: ExperimentConfig,
    sampled: int | None = None,
    reporting: int | None = None,
) -> RoundResult:
    """One round on these (reporting) clients' datasets, or shards of them; `reporting` clients sent an update
    (default: one per dataset), `sampled` clients received the model (default: as many as report; more when some
    dropped out)."""
    reporting = reporting or len(datasets)
    state, base = unwrap_state(state)
    sent = processes.layout.to_keras(processes.learning.get_model_weights(state), base)
    output = processes.learning.next(state, datasets)
    train = output.metrics["client_work"]["train"]
    clipped, zeroed = defense_counts(output.metrics.get("aggregator", {}))
    weights = processes.layout.to_keras(processes.learning.get_model_weights(output.state), base)
    sizes = processes.layout.trainable_sizes(sent)
    return RoundResult(
        state=output.state if base is None else ReconstructionState(output.state, tuple(base)),
        weights=weights,
        train_loss=float(train["loss"]),
        train_accuracy=float(train["accuracy"]),
        bytes_down=download_bytes(processes.layout.shared(sent), sizes, config) * (sampled or reporting),
        bytes_up=update_bytes(sizes, config) * reporting,
        bytes_saved=(update_bytes(sizes, config.replace(compression_bits=0)) - update_bytes(sizes, config)) * reporting,
        clipped=clipped,
        zeroed=zeroed,
    )


def evaluate(processes: Processes, weights: list[np.ndarray], datasets: list[tf.data.Dataset]) -> tuple[float, float]:
    """(loss, accuracy) of these (Keras-ordered) weights over all these clients' examples."""
    evaluation = processes.evaluation
    state = evaluation.set_model_weights(evaluation.initialize(), processes.layout.to_tff(weights))
    current = evaluation.next(state, datasets).metrics["client_work"]["eval"]["current_round_metrics"]
    return float(current["loss"]), float(current["accuracy"])


# -- Federated Reconstruction: the user part stays on the client -------------------------------------------------
# TFF's FedRecon splits the model into global layers (broadcast, trained, averaged) and local ones (by default the
# user_id embedding and the habit path; `local_layer_names` and the `local_part` setting). Each round every client
# resets its local layers to their initial values, re-learns them on its own data with the global part frozen (plain
# SGD at the reconstruction rate, for the reconstruction passes), then trains the global part with its local part
# frozen and sends that update only. The server's state, the bytes each way and the
# weights it hands back hold the global part; the local slots of those Keras lists keep the run's initial values.


@dataclass(frozen=True)
class ReconstructionState:
    """The FedRecon process's state, and the run's initial Keras weights, whose local layers fill the slots of
    every model handed back (the server never holds a trained local part)."""

    learning: object
    initial: tuple[np.ndarray, ...]


def unwrap_state(state: object) -> tuple[object, list[np.ndarray] | None]:
    """(the learning process's state, the initial Keras weights under Federated Reconstruction, else None)."""
    if isinstance(state, ReconstructionState):
        return state.learning, list(state.initial)
    return state, None


def split_layers(model: tf.keras.Model, local_names: tuple[str, ...]) -> tuple[list, list]:
    """(global layers, local layers) of a model whose layers named `local_names` stay local, in layer order."""
    local = set(local_names)
    return [la for la in model.layers if la.name not in local], [la for la in model.layers if la.name in local]


def global_layout(model: tf.keras.Model, local_names: tuple[str, ...]) -> WeightLayout:
    """Where each global variable, in FedRecon's order (trainable ones layer by layer, then the non-trainable
    ones), sits in Keras' get_weights() list."""
    position = {id(v): i for i, v in enumerate(model.weights)}
    shared, _ = split_layers(model, local_names)
    trainable = [v for layer in shared for v in layer.trainable_variables]
    frozen = [v for layer in shared for v in layer.non_trainable_variables]
    return WeightLayout(keras_index=tuple(position[id(v)] for v in trainable + frozen), trainable=len(trainable))


def make_reconstruction_model_fn(spec: ModelSpec, local_names: tuple[str, ...], *, seed: int = 0):
    def model_fn() -> tff.learning.models.ReconstructionModel:
        # Seeding Keras' own generator (not only TF's) gives the local layers the run's seeded initial values,
        # the same as Experiment's seeded model, on every client in every round.
        tf.keras.utils.set_random_seed(seed)
        model = build_model(spec)
        shared, local = split_layers(model, local_names)
        return tff.learning.models.ReconstructionModel.from_keras_model_and_layers(
            model, global_layers=shared, local_layers=local, input_spec=element_spec(spec)
        )

    return model_fn


def reconstruction_processes(spec: ModelSpec, config: ExperimentConfig, *, clients_per_round: int) -> Processes:
    """TFF's FedRecon for training and its reconstruction evaluation for validation; on the shard path, the same
    FedRecon with many users per TFF client call (fedlab.learning.sharded_recon)."""
    local_names = local_layer_names(spec, config.local_part)
    layout = global_layout(build_model(spec), local_names)  # a throwaway model, before tracing (as build_processes)
    model_fn = make_reconstruction_model_fn(spec, local_names, seed=config.seed)
    reconstruct = optimizer("sgd", config.reconstruction_lr)
    client = optimizer(config.client_optimizer, config.client_lr)
    server = optimizer(config.server_optimizer, config.server_lr, momentum=config.server_momentum)
    if training_path(config)[0] == SHARDS:
        from fedlab.learning import sharded_recon

        learning = sharded_recon.build_sharded_fed_recon(
            model_fn,
            loss_fn=loss_fn,
            metrics_fn=metrics_fn,
            client_optimizer=client,
            server_optimizer=server,
            reconstruction_optimizer=reconstruct,
        )
        evaluation = sharded_recon.build_sharded_fed_recon_eval(
            model_fn, loss_fn=loss_fn, metrics_fn=metrics_fn, reconstruction_optimizer=reconstruct
        )
        return Processes(learning=learning, evaluation=evaluation, layout=layout, local_layers=local_names, shards=True)
    aggregator = model_aggregator(config, clients_per_round)
    extra = {} if aggregator is None else {"model_aggregator_factory": aggregator}
    if config.dp_clip is not None:  # DP bounds each client's influence, so clients weigh the same
        extra["client_weighting"] = tff.learning.ClientWeighting.UNIFORM
    learning = tff.learning.algorithms.build_fed_recon(
        model_fn,
        loss_fn=loss_fn,
        metrics_fn=metrics_fn,
        client_optimizer_fn=client,
        server_optimizer_fn=server,
        reconstruction_optimizer_fn=reconstruct,
        # A round's dataset holds the reconstruction passes, then the local epochs with their targets marked
        # (`plans.marked_dataset`).
        dataset_split_fn=split_reconstruction_data,
        **extra,
    )
    evaluation = tff.learning.algorithms.build_fed_recon_eval(
        model_fn,
        loss_fn=loss_fn,
        metrics_fn=metrics_fn,
        reconstruction_optimizer_fn=reconstruct,
        dataset_split_fn=functools.partial(split_reconstruction_data, passes=config.reconstruction_epochs),
    )
    return Processes(learning=learning, evaluation=evaluation, layout=layout, local_layers=local_names)


def reconstruction_eval_dataset(train: tf.data.Dataset, val: tf.data.Dataset) -> tf.data.Dataset:
    """One client's data for FedRecon's validation: its training batches, on which it re-learns its local part,
    then its validation batches, which are scored. TFF's evaluation takes one dataset per client, so the scored
    batches carry each target as -1 - target (never a class), which `split_reconstruction_data` reads back."""
    return train.concatenate(val.map(lambda x, y: (x, -1 - y)))


def split_reconstruction_data(dataset: tf.data.Dataset, *, passes: int = 1) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """FedRecon's dataset split: (the batches to reconstruct on, `passes` times; the marked batches, targets read
    back: scored in validation, trained on in training)."""
    reconstruct = dataset.filter(lambda x, y: tf.reduce_all(y >= 0)).repeat(passes)
    scored = dataset.filter(lambda x, y: tf.reduce_all(y < 0)).map(lambda x, y: (x, -1 - y))
    return reconstruct, scored


def forget_compiled_computations() -> None:
    """Drops what TFF's execution contexts compiled. TFF caches compiled computations in one class-wide LRU
    cache (128 entries) keyed by context, so every closed runtime's context and its compiled protos stayed
    alive: about 10-20 MB more resident memory after each run. Call it once a run's runtime is closed; a live
    context only compiles again on its next call."""
    from fedlab.learning import tff_internals  # the cache has no public handle

    tff_internals.clear_compiled_computations()


def client_dataset(
    inputs: dict[str, np.ndarray],
    targets: np.ndarray,
    spec: ModelSpec,
    *,
    batch_size: int,
    epochs: int = 1,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
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
