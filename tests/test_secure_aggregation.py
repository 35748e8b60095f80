"""Secure aggregation runs: TFF's secure sums, compiled to their insecure bodies, clip to their bounds, sum as integers
and wrap modulo their width on the local runtime, on one loopback worker and split over two workers; a run with
TFF's secure aggregator trains FedAvg's weights and counts its extra bytes."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.config import DISTRIBUTED_DP_UNAVAILABLE, SECURE_WITH_DEFENSE, ExperimentConfig
from fedlab.errors import ConfigError
from fedlab.learning import secure
from fedlab.learning.engine import Experiment
from fedlab.learning.runtime import Runtime, local_workers
from tests.helpers import TINY


def clipped_secure_sum(runtime: Runtime):
    """TFF's float secure sum with bounds [-1, 1] over three clients' values 0.5, 3 and -2."""
    import tensorflow_federated as tff

    process = tff.aggregators.SecureSumFactory(upper_bound_threshold=1.0).create(tff.TensorType(np.float32))
    with runtime.activate():
        return process.next(process.initialize(), [0.5, 3.0, -2.0])


def assert_clipped_and_summed(output) -> None:
    assert output.result == pytest.approx(0.5 + 1.0 - 1.0, abs=1e-6)  # 3 and -2 clipped to the bounds
    assert output.measurements["secure_upper_clipped_count"] == 1
    assert output.measurements["secure_lower_clipped_count"] == 1


@pytest.mark.tff
def test_the_local_runtime_clips_and_sums_securely_and_wraps_modular_sums():
    import tensorflow_federated as tff

    modular = tff.aggregators.SecureModularSumFactory(modulus=8).create(tff.TensorType(np.int32))
    with Runtime(secure_sum=True) as runtime:
        assert_clipped_and_summed(clipped_secure_sum(runtime))
        with runtime.activate():
            assert modular.next(modular.initialize(), [5, 6]).result == (5 + 6) % 8


@pytest.mark.tff
@pytest.mark.parametrize("count", [1, 2], ids=["loopback worker", "split over two workers"])
def test_workers_run_the_secure_sum(count):
    with local_workers(count) as targets, Runtime(workers=targets, secure_sum=True) as runtime:
        assert_clipped_and_summed(clipped_secure_sum(runtime))


@pytest.mark.tff
@pytest.mark.slow
def test_a_secure_run_trains_fedavgs_weights_and_counts_its_extra_bytes(tiny_data, build_cache):
    def run(config):
        experiment = Experiment(config, data=tiny_data, cache=build_cache)
        try:
            experiment.prepare()
            return list(experiment.rounds()), experiment.trained_model().get_weights()
        finally:
            experiment.close()

    plain = ExperimentConfig(data=tiny_data.config, **{**TINY, "rounds": 1})
    (plain_record,), plain_weights = run(plain)
    (record,), weights = run(plain.replace(secure_aggregation=True))
    clients = record.clients
    assert record.bytes_up == plain_record.bytes_up + secure.extra_bytes(up=True) * clients
    assert record.bytes_down == plain_record.bytes_down + secure.extra_bytes(up=False) * clients
    for a, b in zip(plain_weights, weights):  # 32-bit integers within the bounds lose almost nothing
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "changes, message",
    [({"defense": "robust"}, SECURE_WITH_DEFENSE), ({"dp_clip": 1.0}, DISTRIBUTED_DP_UNAVAILABLE)],
)
def test_what_secure_aggregation_cannot_be_combined_with_is_refused_in_one_line(changes, message):
    with pytest.raises(ConfigError) as refused:
        ExperimentConfig(secure_aggregation=True, **changes)
    assert str(refused.value) == message and "\n" not in message
