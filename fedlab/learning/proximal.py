"""FedProx as Li et al. (2020) define it: fedlab's own proximal client work on TFF's `ClientWorkProcess` template.

Each client minimises its loss plus (mu/2)·||w - w0||², with w0 the model the server sent, so every local step adds
mu·(w - w0) to the gradient and pulls the client back towards w0. TFF 0.87's FedProx adds the opposite,
mu·(w0 - w), and pushes clients away: tensorflow_federated/python/learning/templates/proximal_client_work.py,
line 90 (`delta_l2_regularizer * (y - x)` with x the client's weights and y the initial ones; line 202 repeats it
for functional models). fedlab does not use `build_weighted_fed_prox` for that reason.

The rest is TFF's: the training step is FedAvg's client update (`model_delta_client_work.py`) with the proximal
gradient added, and the process is composed from TFF's broadcast distributor, the model aggregator and TFF's
optimizer finalizer (`compose_learning_process`), so at mu = 0 it is FedAvg.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def proximal_gradient(gradients, weights, initial, mu: float):
    """The FedProx gradient: the loss's gradient plus mu·(w - w0), the gradient of (mu/2)·||w - w0||²."""
    return tf.nest.map_structure(lambda g, w, w0: g + mu * (w - w0), gradients, weights, initial)


def _client_update_fn(model_fn, mu: float, weighting: tff.learning.ClientWeighting):
    """FedAvg's client update (TFF's model_delta_client_work) with the proximal gradient added."""
    model = model_fn()
    reduce_dataset = tff.learning.loop_builder.build_training_loop(
        loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE
    )

    @tf.function
    def client_update(optimizer, initial_weights, data):
        weights = tff.learning.models.ModelWeights.from_model(model)
        tf.nest.map_structure(lambda a, b: a.assign(b), weights, initial_weights)

        def reduce_fn(state, batch):
            num_examples, optimizer_state = state
            with tf.GradientTape() as tape:
                output = model.forward_pass(batch, training=True)
            gradients = tape.gradient(output.loss, weights.trainable)
            if mu > 0.0:
                gradients = proximal_gradient(gradients, weights.trainable, initial_weights.trainable, mu)
            optimizer_state, updated = optimizer.next(
                optimizer_state, tuple(tf.nest.flatten(weights.trainable)), tuple(tf.nest.flatten(gradients))
            )
            updated = tf.nest.pack_sequence_as(weights.trainable, updated)
            tf.nest.map_structure(lambda a, b: a.assign(b), weights.trainable, updated)
            if output.num_examples is None:
                num_examples += tf.shape(output.predictions, out_type=tf.int64)[0]
            else:
                num_examples += tf.cast(output.num_examples, tf.int64)
            return num_examples, optimizer_state

        def initial_state():
            specs = tf.nest.map_structure(
                lambda v: tf.TensorSpec(v.shape, v.dtype), tuple(tf.nest.flatten(weights.trainable))
            )
            return tf.zeros([], tf.int64), optimizer.initialize(specs)

        num_examples, _ = reduce_dataset(reduce_fn, data, initial_state)
        delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, weights.trainable)
        delta, non_finite = tff.learning.tensor_utils.zero_all_if_any_non_finite(delta)
        if non_finite > 0:
            weight = tf.constant(0.0, tf.float32)
        elif weighting == tff.learning.ClientWeighting.NUM_EXAMPLES:
            weight = tf.cast(num_examples, tf.float32)
        else:
            weight = tf.constant(1.0, tf.float32)
        result = tff.learning.templates.ClientResult(update=delta, update_weight=weight)
        return result, model.report_local_unfinalized_metrics()

    return client_update


def build_proximal_client_work(
    model_fn, optimizer, mu: float, *, weighting: tff.learning.ClientWeighting
) -> tff.learning.templates.ClientWorkProcess:
    """A `ClientWorkProcess` whose clients train with the FedProx gradient at strength `mu` (0 = FedAvg's)."""
    if mu < 0:
        raise ValueError(f"the proximal strength mu must be at least 0, not {mu}")
    with tf.Graph().as_default():  # a throwaway model, for the types and the metric finalizers
        model = model_fn()
        metrics_aggregation = tff.learning.metrics.sum_then_finalize(model.metric_finalizers())
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
    weights_type = tff.learning.models.weights_type_from_model(model)

    @tff.tensorflow.computation(weights_type, data_type)
    def client_update(initial_weights, dataset):
        return _client_update_fn(model_fn, float(mu), weighting)(optimizer, initial_weights, dataset)

    @tff.federated_computation
    def init_fn():
        return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        result, outputs = tff.federated_map(client_update, (weights, client_data))
        measurements = tff.federated_zip(collections.OrderedDict(train=metrics_aggregation(outputs)))
        return tff.templates.MeasuredProcessOutput(state, result, measurements)

    return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


def build_fed_prox(
    model_fn,
    *,
    mu: float,
    client_optimizer,
    server_optimizer,
    weighted: bool = True,
    model_aggregator=None,
) -> tff.learning.templates.LearningProcess:
    """FedProx as a TFF learning process: TFF's broadcast, this proximal client work, the model aggregator (a
    weighted factory, or an unweighted one when `weighted` is False; None = the mean) and TFF's optimizer
    finalizer, composed by TFF's `compose_learning_process`."""

    @tff.tensorflow.computation
    def initial_weights():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    weights_type = initial_weights.type_signature.result
    if model_aggregator is None:
        model_aggregator = tff.aggregators.MeanFactory() if weighted else tff.aggregators.UnweightedMeanFactory()
    if not weighted:
        model_aggregator = tff.aggregators.as_weighted_aggregator(model_aggregator)
    aggregator = model_aggregator.create(weights_type.trainable, tff.TensorType(np.float32))
    weighting = tff.learning.ClientWeighting.NUM_EXAMPLES if weighted else tff.learning.ClientWeighting.UNIFORM
    return tff.learning.templates.compose_learning_process(
        initial_weights,
        tff.learning.templates.build_broadcast_process(weights_type),
        build_proximal_client_work(model_fn, client_optimizer, mu, weighting=weighting),
        aggregator,
        tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type),
    )
