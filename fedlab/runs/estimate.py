"""How long a run's rounds will take, estimated from earlier finished runs' rounds (pure; no clock)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from fedlab.config import ExperimentConfig

# Seconds per client and round when no earlier run says better. A federated round costs TFF a nearly fixed
# time per client, whatever the model size or local epochs (docs/performance.md: 17-22 s for 100 clients
# of the synthetic city on two cores, 1 or 4 epochs).
DEFAULT_CLIENT_SECONDS = 0.2
UNKNOWN_USERS = 300  # clients when "all users" and no earlier run of all users: the synthetic city's


@dataclass(frozen=True)
class Estimate:
    seconds: float  # every round run (early stopping can end sooner); not building the model or the test
    basis: str  # where the per-client cost came from, for the label


def estimate_duration(config: ExperimentConfig, history: Iterable[tuple[ExperimentConfig, pd.DataFrame]]) -> Estimate:
    """Seconds for all of `config`'s rounds: rounds x clients per round x seconds per client and round, that
    cost measured on earlier runs' rounds (their `seconds` and `clients`): runs of the same model shape and
    mode first, else of the same mode, else any; with none, DEFAULT_CLIENT_SECONDS."""
    history = [(c, r) for c, r in history if len(r) and {"seconds", "clients"} <= set(r.columns)]
    tiers = (
        (
            "earlier runs of the same model shape",
            lambda c: c.model_shape_key == config.model_shape_key and c.mode == config.mode,
        ),
        ("earlier runs of other model shapes", lambda c: c.mode == config.mode),
        ("earlier runs", lambda c: True),
    )
    cost, basis = DEFAULT_CLIENT_SECONDS, "a default cost per client (no earlier run)"
    for label, matches in tiers:
        costs = [_client_seconds(r) for c, r in history if matches(c)]
        costs = [x for x in costs if x is not None]
        if costs:
            cost, basis = sorted(costs)[len(costs) // 2], f"{label} ({len(costs)})"
            break
    return Estimate(seconds=config.rounds * _clients_per_round(config, history) * cost, basis=basis)


def _client_seconds(rounds: pd.DataFrame) -> float | None:
    """Median seconds per client over a run's rounds (the first one warms up, so it is left out)."""
    later = rounds.iloc[1:] if len(rounds) > 1 else rounds
    per_unit = (later["seconds"] / later["clients"].clip(lower=1)).dropna()
    return float(per_unit.median()) if len(per_unit) else None


def _clients_per_round(config: ExperimentConfig, history: list[tuple[ExperimentConfig, pd.DataFrame]]) -> int:
    users = config.data.top_users
    if users is None:  # all users: as many as an earlier run of all users on the same data trained, if any
        seen = [
            int(r["clients"].max())
            for c, r in history
            if c.data.top_users is None and c.data.data == config.data.data and c.mode == "federated"
        ]
        users = max(seen, default=UNKNOWN_USERS)
    if config.mode == "centralized":
        return users
    return min(config.clients_per_round or users, users)


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
