"""Defences from the literature as TFF aggregation factories: coordinate-wise median, trimmed mean, multi-Krum,
and norm bounding with a little Gaussian noise.

Median, trimmed mean and multi-Krum look at every client's update, so the server must hold them all: each factory
gathers the updates with TFF's own `UnweightedReservoirSamplingFactory` (a `federated_aggregate` that concatenates
the client values into tensors of shape [None, ...] at the server), with a reservoir larger than any round, so
every update is kept. In simulation the server holds every update anyway; with secure aggregation it would see
only their sum, which is why these defences cannot be combined with it.

The rules themselves are pure TensorFlow functions of a [clients, values] matrix (`coordinate_median`,
`trimmed_mean`, `krum_scores`, `multi_krum`), tested on tiny hand-built inputs without TFF.

Norm bounding (Sun et al. 2019, "Can you really backdoor federated learning?") is TFF's `clipping_factory` around
a `DifferentiallyPrivateFactory` whose Gaussian query adds noise of a fixed standard deviation to each value of the
mean update.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from fedlab.config import GATHERING_DEFENSES

# Defences that need every client's update at the server, and all this module's defences.
GATHERING = GATHERING_DEFENSES
DEFENSES = (*GATHERING, "norm-bound")
# The reservoir's size: larger than any round, so TFF's sampler keeps every update.
RESERVOIR = 1_000_000
# TFF's robust_aggregator's adaptive clipping (model_update_aggregator.py): the estimate of the 0.8 quantile of the
# update norms, starting at 1.0, learning rate 0.2.
ADAPTIVE_CLIP = dict(initial_estimate=1.0, target_quantile=0.8, learning_rate=0.2)


# -- the rules: pure TensorFlow on a [clients, values] matrix -----------------------------------------------------
def coordinate_median(updates: tf.Tensor) -> tf.Tensor:
    """Each value's median over the clients (the mean of the two middle ones for an even count)."""
    n = tf.shape(updates)[0]
    ordered = tf.sort(updates, axis=0)
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2


def trimmed_count(n, beta: float):
    """How many values trimmed mean cuts at each end of n: floor(beta × n), leaving at least one."""
    n = tf.convert_to_tensor(n)
    cut = tf.cast(tf.floor(beta * tf.cast(n, tf.float32)), n.dtype)
    return tf.minimum(cut, (n - 1) // 2)


def trimmed_mean(updates: tf.Tensor, beta: float) -> tf.Tensor:
    """Each value's mean over the clients after cutting its floor(beta × n) smallest and largest values."""
    n = tf.shape(updates)[0]
    cut = trimmed_count(n, beta)
    return tf.reduce_mean(tf.sort(updates, axis=0)[cut : n - cut], axis=0)


def krum_scores(updates: tf.Tensor, byzantine) -> tf.Tensor:
    """Krum's score of each update (Blanchard et al. 2017): the sum of its squared distances to its n - f - 2
    nearest other updates (at least one, at most n - 1). Honest updates, close to each other, score low."""
    n = tf.shape(updates)[0]
    norms = tf.reduce_sum(tf.square(updates), axis=1)
    distances = tf.maximum(norms[:, None] + norms[None, :] - 2 * tf.matmul(updates, updates, transpose_b=True), 0)
    distances = tf.linalg.set_diag(distances, tf.fill([n], tf.constant(np.inf, updates.dtype)))
    neighbours = tf.clip_by_value(n - tf.cast(byzantine, tf.int32) - 2, 1, tf.maximum(n - 1, 1))
    nearest = -tf.math.top_k(-distances, k=neighbours, sorted=False).values
    return tf.reduce_sum(tf.where(tf.math.is_finite(nearest), nearest, tf.zeros_like(nearest)), axis=1)


def multi_krum(updates: tf.Tensor, byzantine) -> tuple[tf.Tensor, tf.Tensor]:
    """(the mean of the n - f updates with the lowest Krum scores, their row indices); at least one is kept.
    Scored once, as Flower's `aggregate_krum` does."""
    n = tf.shape(updates)[0]
    keep = tf.clip_by_value(n - tf.cast(byzantine, tf.int32), 1, n)
    chosen = tf.math.top_k(-krum_scores(updates, byzantine), k=keep, sorted=True).indices
    return tf.reduce_mean(tf.gather(updates, chosen), axis=0), chosen


def assumed_byzantine(n, share: float):
    """The attackers multi-Krum assumes among n updates: round(share × n)."""
    return tf.cast(tf.round(share * tf.cast(n, tf.float32)), tf.int32)


# -- the factories ---------------------------------------------------------------------------------------------
class GatheringFactory(tff.aggregators.UnweightedAggregationFactory):
    """Gathers every client's update at the server, then applies one rule to them as a [clients, values] matrix.

    `rule` is "median", "trimmed-mean" (cutting `beta` of the updates at each end of every value) or "multi-krum"
    (assuming `byzantine` attackers, or round(`share` × clients) when it is None, and averaging the n - f updates
    Krum scores best). Measurements: `updates` (how many it saw) and, for multi-Krum, `zeroed_count` (the updates
    it left out) and `byzantine` (the f it assumed); for trimmed mean, `trimmed_each_end` (values cut at each end).
    """

    def __init__(self, rule: str, *, beta: float = 0.1, byzantine: int | None = None, share: float = 0.0):
        if rule not in GATHERING:
            raise ValueError(f"unknown rule {rule!r}")
        self._rule, self._beta, self._byzantine, self._share = rule, beta, byzantine, share

    def create(self, value_type) -> tff.templates.AggregationProcess:
        gather = tff.aggregators.UnweightedReservoirSamplingFactory(RESERVOIR).create(value_type)
        samples_type = gather.next.type_signature.result.result.member
        rule, beta, byzantine, share = self._rule, self._beta, self._byzantine, self._share

        @tff.tensorflow.computation(samples_type)
        def apply_rule(samples):
            leaves = tf.nest.flatten(samples)
            n = tf.shape(leaves[0])[0]
            matrix = tf.concat([tf.reshape(leaf, [n, -1]) for leaf in leaves], axis=1)
            measurements = collections.OrderedDict(updates=n)
            if rule == "median":
                vector = coordinate_median(matrix)
            elif rule == "trimmed-mean":
                vector = trimmed_mean(matrix, beta)
                measurements["trimmed_each_end"] = trimmed_count(n, beta)
            else:
                f = assumed_byzantine(n, share) if byzantine is None else tf.constant(byzantine, tf.int32)
                vector, chosen = multi_krum(matrix, f)
                measurements["zeroed_count"] = n - tf.size(chosen)
                measurements["byzantine"] = f
            return unflatten(vector, samples), measurements

        @tff.federated_computation()
        def init_fn():
            return gather.initialize()

        @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
        def next_fn(state, value):
            gathered = gather.next(state, value)
            result, measurements = tff.federated_map(apply_rule, gathered.result)
            return tff.templates.MeasuredProcessOutput(state=gathered.state, result=result, measurements=measurements)

        return tff.templates.AggregationProcess(init_fn, next_fn)


def unflatten(vector: tf.Tensor, samples):
    """One update of the structure of `samples` (each leaf [clients, ...]) from its values laid end to end."""
    leaves = tf.nest.flatten(samples)
    shapes = [leaf.shape[1:] for leaf in leaves]
    sizes = [math.prod(shape) for shape in shapes]
    parts = tf.split(vector, sizes) if len(sizes) > 1 else [vector]
    return tf.nest.pack_sequence_as(samples, [tf.reshape(p, s) for p, s in zip(parts, shapes)])


def norm_bound_factory(*, clip_norm: float | None, noise: float, clients_per_round: int):
    """Sun et al.'s defence from TFF's own factories: each update clipped to `clip_norm` (TFF's adaptive estimate,
    as in its robust aggregator, when None; `clipped_count` counts them), then their mean with Gaussian noise of
    standard deviation `noise` added to each value (a Gaussian sum query over `clients_per_round` clients)."""
    norm = clip_norm or tff.aggregators.PrivateQuantileEstimationProcess.no_noise(**ADAPTIVE_CLIP)
    # The inner query's own clip never binds: the updates reaching it are already clipped.
    query = tfp.NormalizedQuery(
        tfp.GaussianSumQuery(l2_norm_clip=1e9, stddev=noise * clients_per_round), denominator=float(clients_per_round)
    )
    return tff.aggregators.clipping_factory(norm, tff.aggregators.DifferentiallyPrivateFactory(query))


def defense_factory(config, clients_per_round: int) -> tff.aggregators.WeightedAggregationFactory:
    """The aggregator of one of this module's defences, as TFF's learning builders take it: each client counts
    once (the weights are ignored)."""
    if config.defense == "norm-bound":
        inner = norm_bound_factory(
            clip_norm=config.clip_norm, noise=config.bound_noise, clients_per_round=clients_per_round
        )
    else:
        inner = GatheringFactory(
            config.defense, beta=config.trim_beta, byzantine=config.krum_byzantine, share=config.malicious_clients
        )
    return tff.aggregators.as_weighted_aggregator(inner)
