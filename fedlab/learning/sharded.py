"""Many users per TFF client call: FedAvg whose client work trains a shard of users in turn.

TFF runs each client's training as its own call, and its worker instantiates that call's functions again
every time: about 0.3 CPU-seconds per client whatever the model size (docs/performance.md). Here one TFF
client is a *shard* of users. Its one call trains them one after another on one model that is built
once: each user starts from the broadcast weights with a fresh client-optimizer state (TFF's functional
optimizer's `initialize`), runs its own local epochs over its own batches, and adds its example-weighted
delta to the shard's sum. The shard reports the weighted mean of its users' deltas with weight = their
total examples, so TFF's weighted mean over shards is the weighted mean over users: FedAvg unchanged.

The distributor, the aggregator (TFF's weighted mean), the server optimizer (TFF's apply-optimizer
finalizer) and the process state are TFF's own, joined by `tff.learning.templates.compose_learning_process`.

A shard's dataset is its users' batched datasets one after another, each batch tagged with the user's
position in the shard (`shard_dataset`); the client work closes a user's update when the tag changes.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

USER_TAG = tf.TensorSpec((), tf.int32)


# -- how users are grouped ----------------------------------------------------------------------------------------
def shard_count(users: int, *, cores: int, workers: int = 0) -> int:
    """How many shards a round's users go in: one per remote worker (TFF gives each worker its share of the
    clients), else one per core of the local worker (TFF runs client calls side by side); never more than users."""
    wanted = workers if workers > 0 else max(cores, 1)
    return max(1, min(wanted, users))


def assign_shards(batches: list[int], shards: int) -> list[list[int]]:
    """Positions of users (by their batch counts) grouped into `shards` shards of nearly equal work: each user,
    most batches first, goes to the shard with the fewest batches so far (ties: the lower shard). Within a shard
    users keep their order. Empty shards are left out."""
    load = [0] * shards
    members: list[list[int]] = [[] for _ in range(shards)]
    for position in sorted(range(len(batches)), key=lambda i: (-batches[i], i)):
        target = min(range(shards), key=lambda s: (load[s], s))
        load[target] += batches[position]
        members[target].append(position)
    return [sorted(m) for m in members if m]


def local_cores() -> int:
    """The cores this process (and the local TFF worker it starts) may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def group_users(
    users: list,
    batches: list[int],
    *,
    workers: int = 0,
    join=None,
    options: tf.data.Options | None = None,
) -> list[tf.data.Dataset]:
    """A round's per-user datasets (or FedRecon's `plans.UserPlan`s) as the few TFF client datasets of the shard path,
    each shard's users joined by `join` (default `shard_dataset`, for training; `pooled_dataset` for evaluation;
    `plans.shard_dataset` for plans); `batches` = each user's batches, for balancing the
    shards; `options` set on each (the per-user datasets' own, `federated.lean_options`)."""
    shards = assign_shards(batches, shard_count(len(users), cores=local_cores(), workers=workers))
    join = join or shard_dataset
    grouped = [join([users[i] for i in members]) for members in shards]
    return grouped if options is None else [ds.with_options(options) for ds in grouped]


def shard_dataset(datasets: list[tf.data.Dataset]) -> tf.data.Dataset:
    """Users' batched datasets one after another, each batch as (batch, the user's position in this list)."""
    # Zipped with the tag repeated rather than mapped: a map traces a function per user (1.0 s to build a round's
    # two shards of 100 users on a loaded machine, against 0.12 s zipped), and the worker instantiates each.
    tagged = [tf.data.Dataset.zip((ds, _repeated(tag))) for tag, ds in enumerate(datasets)]
    return _concatenate(tagged)


def _repeated(tag: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensors(tf.constant(tag, tf.int32)).repeat()


def pooled_dataset(datasets: list[tf.data.Dataset]) -> tf.data.Dataset:
    """Users' batched datasets one after another, batches unchanged (for evaluation, whose metrics are sums)."""
    return _concatenate(datasets)


def _concatenate(datasets: list[tf.data.Dataset]) -> tf.data.Dataset:
    # A balanced tree keeps the dataset graph shallow however many users a shard holds.
    while len(datasets) > 1:
        pairs = [datasets[i].concatenate(datasets[i + 1]) for i in range(0, len(datasets) - 1, 2)]
        datasets = pairs + ([datasets[-1]] if len(datasets) % 2 else [])
    return datasets[0]


# -- the client work ----------------------------------------------------------------------------------------------
def user_delta(start, variables, examples, delta_sum, weight_sum):
    """(delta_sum, weight_sum) with one more user's update added, as TFF's model-delta client work makes it:
    start - trained, all zero and weight 0 when any value is not finite; weighted by the user's examples."""
    delta = tuple(s - v.read_value() for s, v in zip(start, variables))
    delta, non_finite = tff.learning.tensor_utils.zero_all_if_any_non_finite(delta)
    weight = tf.where(non_finite > 0, 0.0, tf.cast(examples, tf.float32))
    return tuple(total + d * weight for total, d in zip(delta_sum, delta)), weight_sum + weight


def build_shard_update(model_fn):
    """The tf.function that trains one shard; the model is built once per trace (as TFF's own client update)."""
    model = model_fn()

    @tf.function
    def shard_update(optimizer, initial_weights, data, hparams):
        weights = tff.learning.models.ModelWeights.from_model(model)
        tf.nest.map_structure(lambda v, t: v.assign(t), weights, initial_weights)
        variables = tuple(tf.nest.flatten(weights.trainable))
        start = tuple(tf.nest.flatten(initial_weights.trainable))
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in variables)

        def fresh_optimizer():
            return optimizer.set_hparams(optimizer.initialize(specs), hparams)

        def reduce_fn(state, element):
            batch, user = element
            current, examples, opt_state, delta_sum, weight_sum = state

            def next_user():
                new_sum, new_weight = user_delta(start, variables, examples, delta_sum, weight_sum)
                with tf.control_dependencies([*new_sum, new_weight]):
                    resets = [v.assign(s) for v, s in zip(variables, start)]
                with tf.control_dependencies(resets):
                    return (
                        tf.zeros([], tf.int64),
                        tf.nest.map_structure(tf.identity, fresh_optimizer()),
                        tuple(tf.identity(t) for t in new_sum),
                        tf.identity(new_weight),
                    )

            def same_user():
                return examples, opt_state, delta_sum, weight_sum

            examples, opt_state, delta_sum, weight_sum = tf.cond(tf.not_equal(user, current), next_user, same_user)
            with tf.control_dependencies(tf.nest.flatten((examples, opt_state, delta_sum, weight_sum))):
                with tf.GradientTape() as tape:
                    output = model.forward_pass(batch, training=True)
                gradients = tape.gradient(output.loss, weights.trainable)
                opt_state, updated = optimizer.next(
                    opt_state, tuple(v.read_value() for v in variables), tuple(tf.nest.flatten(gradients))
                )
                for v, u in zip(variables, updated):
                    v.assign(u)
            return user, examples + tf.cast(output.num_examples, tf.int64), opt_state, delta_sum, weight_sum

        initial_state = (
            tf.constant(-1, tf.int32),
            tf.zeros([], tf.int64),
            fresh_optimizer(),
            tuple(tf.zeros_like(s) for s in start),
            tf.zeros([], tf.float32),
        )
        _, examples, _, delta_sum, weight_sum = data.reduce(initial_state, reduce_fn)
        delta_sum, weight_sum = user_delta(start, variables, examples, delta_sum, weight_sum)
        update = tuple(tf.math.divide_no_nan(total, weight_sum) for total in delta_sum)
        result = tff.learning.templates.ClientResult(
            update=tf.nest.pack_sequence_as(weights.trainable, update), update_weight=weight_sum
        )
        return result, model.report_local_unfinalized_metrics()

    return shard_update


def build_shard_client_work(model_fn, optimizer) -> tff.learning.templates.ClientWorkProcess:
    """A ClientWorkProcess like TFF's model-delta client work (same state: the client optimizer's
    hyperparameters; same measurements: `train` metrics summed then finalised), whose client datasets are
    shards (`shard_dataset`) and whose result per client is its users' example-weighted mean delta."""
    with tf.Graph().as_default():
        model = model_fn()
        aggregate_metrics = tff.learning.metrics.sum_then_finalize(model.metric_finalizers())
    data_type = tff.SequenceType(tff.types.tensorflow_to_type((model.input_spec, USER_TAG)))
    weights_type = tff.learning.models.weights_type_from_model(model)
    hparams = optimizer.get_hparams(optimizer.initialize(tf.TensorSpec((), tf.float32)))

    @tff.federated_computation
    def init_fn():
        return tff.federated_value(hparams, tff.SERVER)

    state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        return state

    @tff.tensorflow.computation(state_type, state_type)
    def set_hparams_fn(state, new_hparams):
        del state
        return new_hparams

    @tff.tensorflow.computation(state_type, weights_type, data_type)
    def train_shard(state, initial_weights, dataset):
        return build_shard_update(model_fn)(optimizer, initial_weights, dataset, state)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, shards):
        results, outputs = tff.federated_map(train_shard, (tff.federated_broadcast(state), weights, shards))
        measurements = tff.federated_zip({"train": aggregate_metrics(outputs)})
        return tff.templates.MeasuredProcessOutput(state, results, measurements)

    return tff.learning.templates.ClientWorkProcess(
        init_fn, next_fn, get_hparams_fn=get_hparams_fn, set_hparams_fn=set_hparams_fn
    )


def build_sharded_fed_avg(model_fn, *, client_optimizer, server_optimizer, model_aggregator=None):
    """Weighted FedAvg over shards of users: TFF's broadcast, TFF's weighted mean (or `model_aggregator`, a
    weighted factory), TFF's apply-optimizer finalizer, around the shard client work."""

    @tff.tensorflow.computation
    def initial_model_weights_fn():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    weights_type = initial_model_weights_fn.type_signature.result
    aggregator = (model_aggregator or tff.aggregators.MeanFactory()).create(
        weights_type.trainable, tff.TensorType(np.float32)
    )
    return tff.learning.templates.compose_learning_process(
        initial_model_weights_fn,
        tff.learning.templates.build_broadcast_process(weights_type),
        build_shard_client_work(model_fn, client_optimizer),
        aggregator,
        tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type),
    )
