"""The privacy budget (epsilon, delta) that DP-FedAvg spent, from Google's `dp_accounting` library.

Unit of privacy: one client, i.e. one user and all of their check-ins (user-level DP), under the
add-or-remove-one-client relation that TFF's `DifferentiallyPrivateFactory.gaussian_fixed` assumes.

Each round is accounted as a Poisson-sampled Gaussian mechanism: every client takes part with
probability q = clients_per_round / total_clients, and the clipped sum gets Gaussian noise of
`noise_multiplier` times the clipping norm. The engine actually draws a fixed-size sample without
replacement; treating it as Poisson sampling with the same q is the usual approximation (TFF's own
DP tutorials do the same). Client dropout is ignored: a client that drops out adds nothing, so
the budget shown is an upper bound for that case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DELTA_EXPONENT = 1.1  # default delta = 1 / total_clients ** 1.1: below 1/n, as DP needs to mean anything


@dataclass(frozen=True)
class PrivacyBudget:
    """(epsilon, delta)-DP per client. epsilon is inf when there is no noise."""

    epsilon: float
    delta: float


def default_delta(total_clients: int) -> float:
    """1 / n**1.1: the common convention of a delta a little below one over the number of clients."""
    _check_whole(total_clients, "total clients", minimum=1)
    return 1.0 / total_clients**DELTA_EXPONENT


def dp_epsilon(
    *,
    noise_multiplier: float,
    clients_per_round: int | None,
    total_clients: int,
    rounds: int,
    delta: float | None = None,
) -> PrivacyBudget:
    """The (epsilon, delta) after `rounds` DP-FedAvg rounds, by the RDP accountant of `dp_accounting`.

    `clients_per_round` None (or more than `total_clients`) means every client, as the engine reads it.
    `delta` defaults to `default_delta(total_clients)`. No noise gives epsilon = inf (clipping alone
    promises nothing); no rounds give epsilon = 0.
    """
    _check_whole(total_clients, "total clients", minimum=1)
    _check_whole(rounds, "rounds", minimum=0)
    if clients_per_round is not None:
        _check_whole(clients_per_round, "clients per round", minimum=1)
    if not (isinstance(noise_multiplier, (int, float)) and math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise multiplier must be a number of 0 or more, not {noise_multiplier!r}")
    delta = default_delta(total_clients) if delta is None else delta
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), not {delta!r}")
    if rounds == 0:
        return PrivacyBudget(epsilon=0.0, delta=delta)
    if noise_multiplier == 0:
        return PrivacyBudget(epsilon=math.inf, delta=delta)
    rate = sampling_rate(clients_per_round=clients_per_round, total_clients=total_clients)
    return PrivacyBudget(epsilon=_rdp_epsilon(noise_multiplier, rate, rounds, delta), delta=delta)


def sampling_rate(*, clients_per_round: int | None, total_clients: int) -> float:
    """The share of clients that take part in a round, capped at 1 as the engine caps the sample size."""
    if clients_per_round is None:
        return 1.0
    return min(clients_per_round, total_clients) / total_clients


def _rdp_epsilon(noise_multiplier: float, rate: float, rounds: int, delta: float) -> float:
    # Imported here: dp_accounting pulls in scipy, which the dashboard need not load until asked.
    import dp_accounting

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            sampling_probability=rate, event=dp_accounting.GaussianDpEvent(noise_multiplier)
        ),
        rounds,
    )
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(target_delta=delta))


def _check_whole(value, label: str, *, minimum: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{label} must be a whole number of at least {minimum}, not {value!r}")
