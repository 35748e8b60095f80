"""Secure aggregation as TFF builds it, with its arithmetic run in the clear.

`tff.learning.secure_aggregator` sums the clients' updates with `tff.federated_secure_sum_bitwidth`: each value is
clipped to bounds the server estimates every round (the 95th percentile of the clients' largest values, doubled),
mapped to an integer of 32 bits (tensorflow_federated/python/aggregators/primitives.py, `_SECAGG_MAX = 2**32 - 1`),
summed modulo 2^bits and mapped back. TFF's C++ worker implements no secure sum, so fedlab's runtime compiles those
intrinsics to their insecure TensorFlow bodies first (fedlab.learning.runtime.secure_sum_compiler): the numbers are
the ones secure aggregation produces, but no key exchange or masking runs, and the worker could read every update.
"""

from __future__ import annotations

import tensorflow_federated as tff

from fedlab.learning.runtime import quiet_tensorflow_log

# TFF's float secure sum maps every value to an integer in [0, 2^32 - 1]; its factory offers no other width.
SECURE_SUM_BITS = 32
# What each client adds to the secure sums besides its update, in bytes (32-bit integers: 4 bytes; one-bit counts
# sent as one byte each): its weight, its record for the adaptive bound, and for each of the three secure sums
# (update, weight, bound record) the count of summands and the two counts of clipped values.
SECURE_EXTRA_UP = 4 + 4 + 3 * 3
# The bounds (lower and upper, float32) the server sends each client for each of those three secure sums.
SECURE_EXTRA_DOWN = 3 * 2 * 4


def aggregator(*, weighted: bool):
    """TFF's secure aggregator: its adaptive bounds, clipping to them and the 32-bit modular sum. Its own adaptive
    zeroing and clipping of whole updates are off: they are defences, which fedlab sets apart."""
    with quiet_tensorflow_log():  # its bound estimator builds a secure sum already
        inner = tff.learning.secure_aggregator(zeroing=False, clipping=False, weighted=weighted)
    return QuietWeighted(inner) if weighted else inner


class QuietWeighted(tff.aggregators.WeightedAggregationFactory):
    """A weighted factory built with TensorFlow's log quiet (`quiet_tensorflow_log`): TFF's secure sum
    (aggregators/primitives.py, line 611) builds range checks that TensorFlow reports as "never used"."""

    def __init__(self, inner: tff.aggregators.WeightedAggregationFactory):
        self._inner = inner

    def create(self, value_type, weight_type):
        with quiet_tensorflow_log():
            return self._inner.create(value_type, weight_type)


def extra_bytes(*, up: bool) -> int:
    """Bytes secure aggregation adds per reporting client (up) or per sampled client (down) in a round; the update
    itself travels as 32-bit integers, the same 4 bytes a value as float32. The key agreement and masks of the real
    protocol (Bonawitz et al. 2017) would add more; they do not run here and are not counted."""
    return SECURE_EXTRA_UP if up else SECURE_EXTRA_DOWN
