"""Federated Reconstruction on shards of users: TFF's FedRecon, many users per TFF client call.

The client work does, for each user of a shard in turn, what TFF 0.87's FedRecon client update does for one client
(`tff.learning.algorithms.build_fed_recon`, `_build_reconstruction_client_work`): the global part set to the
broadcast weights and the local part to its initial values; the local part re-learnt with the global part frozen
(the reconstruction optimizer, fresh state); then the global part trained with the local part frozen (the client
optimizer, fresh state), the metrics counted on those batches only; the global part's delta weighted by those
batches' examples (zero, and weight 0, if any value is not finite). The shard reports its users' weighted mean delta
with weight = their examples, so TFF's weighted mean over shards is FedRecon's over users. Broadcast, aggregation,
server optimizer and state are TFF's own (`compose_learning_process`).

Validation reconstructs the same way per user, then scores that user's validation batches, as TFF's
`build_fed_recon_eval` does per client.

A shard's dataset is `plans.shard_dataset`: its users' batches one after another, each tagged with the user's
position in the shard and its phase (`plans.RECONSTRUCT`, or TRAIN; SCORE in validation).
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.learning.plans import RECONSTRUCT
from fedlab.learning.sharded import USER_TAG, user_delta

PHASE_TAG = tf.TensorSpec((), tf.int32)


# -- the shared pieces of the two client computations -------------------------------------------------------------
def _keras_metrics(loss_fn, metrics_fn) -> list[tf.keras.metrics.Metric]:
    # TFF's FedRecon metrics: the given ones, then the loss as an example-weighted mean.
    return [*metrics_fn(), tf.keras.metrics.MeanMetricWrapper(loss_fn(), name="loss")]


def _metric_finalizers(loss_fn, metrics_fn) -> collections.OrderedDict:
    with tf.Graph().as_default():
        return collections.OrderedDict(
            (m.name, tff.learning.metrics.create_keras_metric_finalizer(m)) for m in _keras_metrics(loss_fn, metrics_fn)
        )


class _UserSteps:
    """One model, its split into global and local variables, and the steps a user's batch takes."""

    def __init__(self, model_fn, loss_fn, metrics_fn):
        self.model = model_fn()
        self.metrics = _keras_metrics(loss_fn, metrics_fn)
        self.loss = loss_fn()
        Recon = tff.learning.models.ReconstructionModel
        self.global_weights = Recon.get_global_variables(self.model)
        self.local = tuple(Recon.get_local_variables(self.model).trainable)
        self.trained = tuple(self.global_weights.trainable)

    @staticmethod
    def specs(variables) -> tuple:
        return tuple(tf.TensorSpec(v.shape, v.dtype) for v in variables)

    def step(self, optimizer, opt_state, variables, batch):
        """One optimizer step on `variables` (the rest frozen); returns (its new state, the batch's output)."""
        with tf.GradientTape() as tape:
            output = self.model.forward_pass(batch, training=True)
            loss = self.loss(y_true=output.labels, y_pred=output.predictions)
        gradients = tape.gradient(loss, variables)
        opt_state, updated = optimizer.next(opt_state, tuple(v.read_value() for v in variables), tuple(gradients))
        for v, u in zip(variables, updated):
            v.assign(u)
        return opt_state, output

    def count(self, output) -> None:
        for metric in self.metrics:
            metric.update_state(y_true=output.labels, y_pred=output.predictions)

    def unfinalized_metrics(self):
        return tff.learning.models.ReconstructionModel.read_metric_variables(self.metrics)


# -- training -----------------------------------------------------------------------------------------------------
def build_shard_update(model_fn, loss_fn, metrics_fn):
    """The tf.function that trains one shard under FedRecon; the model is built once per trace."""
    steps = _UserSteps(model_fn, loss_fn, metrics_fn)

    @tf.function
    def shard_update(client_optimizer, reconstruction_optimizer, initial_weights, data):
        tf.nest.map_structure(lambda v, t: v.assign(t), steps.global_weights, initial_weights)
        local_start = tuple(v.read_value() for v in steps.local)  # the initial values every user starts from
        start = tuple(tf.nest.flatten(initial_weights.trainable))

        def fresh_states():
            return (
                client_optimizer.initialize(steps.specs(steps.trained)),
                reconstruction_optimizer.initialize(steps.specs(steps.local)),
            )

        def reduce_fn(state, element):
            batch, user, phase = element
            current, examples, opt_states, delta_sum, weight_sum = state

            def next_user():
                new_sum, new_weight = user_delta(start, steps.trained, examples, delta_sum, weight_sum)
                with tf.control_dependencies([*new_sum, new_weight]):
                    resets = [v.assign(s) for v, s in zip(steps.trained + steps.local, start + local_start)]
                with tf.control_dependencies(resets):
                    return (
                        tf.zeros([], tf.int64),
                        tf.nest.map_structure(tf.identity, fresh_states()),
                        tuple(tf.identity(t) for t in new_sum),
                        tf.identity(new_weight),
                    )

            examples, opt_states, delta_sum, weight_sum = tf.cond(
                tf.not_equal(user, current), next_user, lambda: (examples, opt_states, delta_sum, weight_sum)
            )
            client_state, recon_state = opt_states

            def reconstruct():
                new_state, _ = steps.step(reconstruction_optimizer, recon_state, steps.local, batch)
                return examples, (client_state, new_state)

            def train():
                new_state, output = steps.step(client_optimizer, client_state, steps.trained, batch)
                steps.count(output)
                return examples + tf.cast(output.num_examples, tf.int64), (new_state, recon_state)

            with tf.control_dependencies(tf.nest.flatten((examples, opt_states, delta_sum, weight_sum))):
                examples, opt_states = tf.cond(tf.equal(phase, RECONSTRUCT), reconstruct, train)
            return user, examples, opt_states, delta_sum, weight_sum

        initial_state = (
            tf.constant(-1, tf.int32),
            tf.zeros([], tf.int64),
            fresh_states(),
            tuple(tf.zeros_like(s) for s in start),
            tf.zeros([], tf.float32),
        )
        _, examples, _, delta_sum, weight_sum = data.reduce(initial_state, reduce_fn)
        delta_sum, weight_sum = user_delta(start, steps.trained, examples, delta_sum, weight_sum)
        update = tuple(tf.math.divide_no_nan(total, weight_sum) for total in delta_sum)
        result = tff.learning.templates.ClientResult(
            update=tf.nest.pack_sequence_as(initial_weights.trainable, update), update_weight=weight_sum
        )
        return result, steps.unfinalized_metrics()

    return shard_update


def _types(model_fn):
    @tff.tensorflow.computation
    def initial_model_weights_fn():
        return tff.learning.models.ReconstructionModel.get_global_variables(model_fn())

    with tf.Graph().as_default():
        input_spec = model_fn().input_spec
    data_type = tff.SequenceType(tff.types.tensorflow_to_type((input_spec, USER_TAG, PHASE_TAG)))
    return initial_model_weights_fn, initial_model_weights_fn.type_signature.result, data_type


def build_shard_client_work(model_fn, *, loss_fn, metrics_fn, client_optimizer, reconstruction_optimizer):
    """A ClientWorkProcess like TFF's FedRecon client work (stateless; measurements: `train` metrics summed then
    finalised), whose client datasets are shards (`plans.shard_dataset` of `plans.training_plan`s)."""
    _, weights_type, data_type = _types(model_fn)
    aggregate_metrics = tff.learning.metrics.sum_then_finalize(_metric_finalizers(loss_fn, metrics_fn))

    @tff.federated_computation
    def init_fn():
        return tff.federated_value((), tff.SERVER)

    @tff.tensorflow.computation(weights_type, data_type)
    def train_shard(initial_weights, dataset):
        update = build_shard_update(model_fn, loss_fn, metrics_fn)
        return update(client_optimizer, reconstruction_optimizer, initial_weights, dataset)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, shards):
        results, outputs = tff.federated_map(train_shard, (weights, shards))
        measurements = tff.federated_zip({"train": aggregate_metrics(outputs)})
        return tff.templates.MeasuredProcessOutput(state, results, measurements)

    return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


def build_sharded_fed_recon(
    model_fn, *, loss_fn, metrics_fn, client_optimizer, server_optimizer, reconstruction_optimizer
):
    """FedRecon (example-weighted) over shards of users: TFF's broadcast, weighted mean and apply-optimizer
    finalizer around the shard client work."""
    initial_model_weights_fn, weights_type, _ = _types(model_fn)
    return tff.learning.templates.compose_learning_process(
        initial_model_weights_fn,
        tff.learning.templates.build_broadcast_process(weights_type),
        build_shard_client_work(
            model_fn,
            loss_fn=loss_fn,
            metrics_fn=metrics_fn,
            client_optimizer=client_optimizer,
            reconstruction_optimizer=reconstruction_optimizer,
        ),
        tff.aggregators.MeanFactory().create(weights_type.trainable, tff.TensorType(np.float32)),
        tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type),
    )


# -- validation ---------------------------------------------------------------------------------------------------
def build_shard_scores(model_fn, loss_fn, metrics_fn):
    """The tf.function that validates one shard: per user, the local part re-learnt from its initial values, then
    that user's scored batches counted (no training of the global part)."""
    steps = _UserSteps(model_fn, loss_fn, metrics_fn)

    @tf.function
    def shard_scores(reconstruction_optimizer, weights, data):
        tf.nest.map_structure(lambda v, t: v.assign(t), steps.global_weights, weights)
        local_start = tuple(v.read_value() for v in steps.local)

        def fresh_state():
            return reconstruction_optimizer.initialize(steps.specs(steps.local))

        def reduce_fn(state, element):
            batch, user, phase = element
            current, recon_state = state

            def next_user():
                with tf.control_dependencies([v.assign(s) for v, s in zip(steps.local, local_start)]):
                    return tf.nest.map_structure(tf.identity, fresh_state())

            recon_state = tf.cond(tf.not_equal(user, current), next_user, lambda: recon_state)

            def reconstruct():
                return steps.step(reconstruction_optimizer, recon_state, steps.local, batch)[0]

            def score():
                steps.count(steps.model.forward_pass(batch, training=False))
                return recon_state

            with tf.control_dependencies(tf.nest.flatten(recon_state)):
                recon_state = tf.cond(tf.equal(phase, RECONSTRUCT), reconstruct, score)
            return user, recon_state

        data.reduce((tf.constant(-1, tf.int32), fresh_state()), reduce_fn)
        return steps.unfinalized_metrics()

    return shard_scores


def build_sharded_fed_recon_eval(model_fn, *, loss_fn, metrics_fn, reconstruction_optimizer):
    """TFF's FedRecon evaluation process (same state, same `client_work.eval.current_round_metrics`) whose client
    datasets are shards (`plans.shard_dataset` of `plans.validation_plan`s)."""
    initial_model_weights_fn, weights_type, data_type = _types(model_fn)

    @tff.tensorflow.computation(weights_type, data_type)
    def score_shard(weights, dataset):
        return build_shard_scores(model_fn, loss_fn, metrics_fn)(reconstruction_optimizer, weights, dataset)

    metrics = tff.learning.metrics.SumThenFinalizeFactory(_metric_finalizers(loss_fn, metrics_fn)).create(
        score_shard.type_signature.result
    )
    empty = tff.learning.templates.ClientResult(update=(), update_weight=())

    @tff.federated_computation
    def init_fn():
        return metrics.initialize()

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, shards):
        output = metrics.next(state, tff.federated_map(score_shard, (weights, shards)))
        current, total = output.result
        measurements = tff.federated_zip(
            {"eval": collections.OrderedDict(current_round_metrics=current, total_rounds_metrics=total)}
        )
        return tff.templates.MeasuredProcessOutput(output.state, tff.federated_value(empty, tff.CLIENTS), measurements)

    empty_type = tff.FederatedType(empty, tff.CLIENTS).member
    return tff.learning.templates.compose_learning_process(
        initial_model_weights_fn,
        tff.learning.templates.build_broadcast_process(weights_type),
        tff.learning.templates.ClientWorkProcess(init_fn, next_fn),
        tff.aggregators.MeanFactory().create(empty_type.update, empty_type.update_weight),
        tff.learning.templates.finalizers.build_identity_finalizer(weights_type, update_type=empty_type.update_weight),
    )
