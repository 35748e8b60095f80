"""The DP budget: dp_accounting's RDP accountant, checked on cases that can be worked out by hand."""

from __future__ import annotations

import math

import pytest

from fedlab.results.privacy import PrivacyBudget, default_delta, dp_epsilon, sampling_rate

pytest.importorskip("dp_accounting")


def epsilon(**changes) -> float:
    options = dict(noise_multiplier=1.0, clients_per_round=10, total_clients=100, rounds=10, delta=1e-5)
    options.update(changes)
    return dp_epsilon(**options).epsilon


def test_one_full_round_matches_dp_accountings_documented_gaussian():
    # dp_accounting's own test: a Gaussian with sigma 4.530877117 is exactly (1, 1e-6)-DP.
    assert epsilon(noise_multiplier=4.530877117, clients_per_round=None, rounds=1, delta=1e-6) == pytest.approx(
        1.0, abs=1e-3
    )


def test_t_full_rounds_cost_the_same_as_one_round_with_sigma_over_root_t():
    # Without sampling each round has RDP alpha / (2 sigma^2); T of them add up to alpha T / (2 sigma^2).
    assert epsilon(noise_multiplier=2.0, clients_per_round=100, rounds=16) == pytest.approx(
        epsilon(noise_multiplier=0.5, clients_per_round=100, rounds=1), rel=1e-9
    )


def test_full_participation_stays_below_the_classic_rdp_conversion():
    sigma, rounds, delta = 3.0, 5, 1e-5
    classic = min(rounds * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1) for a in range(2, 257))
    assert 0 < epsilon(noise_multiplier=sigma, clients_per_round=None, rounds=rounds, delta=delta) <= classic


def test_more_noise_spends_less():
    assert epsilon(noise_multiplier=2.0) < epsilon(noise_multiplier=1.0) < epsilon(noise_multiplier=0.7)


def test_more_rounds_spend_more():
    assert epsilon(rounds=5) < epsilon(rounds=10) < epsilon(rounds=40)


def test_sampling_a_fraction_of_clients_spends_less_than_sampling_all():
    assert epsilon(clients_per_round=10) < epsilon(clients_per_round=50) < epsilon(clients_per_round=100)


def test_clients_per_round_none_or_above_total_means_everyone():
    assert epsilon(clients_per_round=None) == epsilon(clients_per_round=100) == epsilon(clients_per_round=500)


def test_no_noise_gives_infinite_epsilon():
    assert dp_epsilon(noise_multiplier=0.0, clients_per_round=10, total_clients=100, rounds=3).epsilon == math.inf


def test_no_rounds_spend_nothing():
    assert epsilon(rounds=0) == 0.0


def test_default_delta_is_one_over_clients_to_the_1_1_and_is_returned():
    budget = dp_epsilon(noise_multiplier=1.0, clients_per_round=10, total_clients=100, rounds=1)
    assert isinstance(budget, PrivacyBudget)
    assert budget.delta == pytest.approx(100**-1.1) == default_delta(100)
    assert budget.delta < 1 / 100


def test_larger_delta_gives_smaller_epsilon():
    assert epsilon(delta=1e-3) < epsilon(delta=1e-6)


def test_sampling_rate_is_capped_at_one():
    assert sampling_rate(clients_per_round=30, total_clients=120) == 0.25
    assert sampling_rate(clients_per_round=300, total_clients=120) == 1.0


@pytest.mark.parametrize(
    "changes",
    [
        {"noise_multiplier": -1.0},
        {"rounds": -1},
        {"total_clients": 0},
        {"clients_per_round": 0},
        {"delta": 1.0},
        {"rounds": 2.5},
    ],
)
def test_bad_inputs_are_refused(changes):
    with pytest.raises(ValueError):
        epsilon(**changes)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        dp_epsilon(1.0, 10, 100, 10)  # type: ignore[misc]
