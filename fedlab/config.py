"""The one experiment configuration that flows through CLI, dashboard, engine and store."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from fedlab.errors import ConfigError

CYCLIC_TIME_FEATURES = (
    "clock_sin", "clock_cos", "day_sin", "day_cos",
    "month_sin", "month_cos", "week_day_sin", "week_day_cos",
)
# The study's column order.
ALL_FEATURES = (
    "cat_id", "user_id", "latitude", "longitude", "is_weekend",
    *CYCLIC_TIME_FEATURES, "venue_id", "orig_cat_id",
)
# Integer ids; small vocabularies are one-hot, large ones embedded.
CATEGORICAL_FEATURES = ("cat_id", "user_id", "venue_id", "orig_cat_id")
# Per-step vectors derived from the user's own earlier check-ins (counted on the client); not the study's.
HABIT_FEATURES = ("user_habits",)
KNOWN_FEATURES = (*ALL_FEATURES, *HABIT_FEATURES)
EMBEDDED_FEATURES = ("user_id", "venue_id", "orig_cat_id")
NUMERIC_FEATURES = tuple(f for f in ALL_FEATURES if f not in CATEGORICAL_FEATURES)  # one number per step

PRESETS = {
    "central": ("cat_id", *CYCLIC_TIME_FEATURES),
    "biggest": ALL_FEATURES,
    "habits": (*ALL_FEATURES, *HABIT_FEATURES),
}
GROUPINGS = ("uber", "root", "fine")
MODES = ("federated", "centralized")
OPTIMIZERS = ("sgd", "adam")


def features_for(preset: str) -> tuple[str, ...]:
    try:
        return PRESETS[preset]
    except KeyError:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """What turns a check-in file into client sequences; the cache key for preprocessing."""

    data: str | None = None  # path to a check-in file; None = the synthetic default city
    grouping: str = "uber"
    top_users: int | None = 100  # None = every user
    n: int = 17  # check-ins per sequence: n-1 inputs, n-1 next-category targets
    stride: int | None = None  # None = non-overlapping chunks (stride n)
    skip_bad_rows: bool = False
    iid: bool = False  # reshuffle check-ins into IID clients of the same sizes
    seed: int = 0

    def __post_init__(self):
        _check(self.grouping in GROUPINGS, f"grouping must be one of {', '.join(GROUPINGS)}, not {self.grouping!r}")
        _check(self.top_users is None or _is_int(self.top_users) and self.top_users >= 1,
               f"top users must be a whole number of at least 1 (or all), not {self.top_users!r}")
        _check(_is_int(self.n) and self.n >= 2,
               f"N must be at least 2 (one input and one target check-in), not {self.n!r}")
        _check(self.stride is None or _is_int(self.stride) and self.stride >= 1,
               f"stride must be a whole number of at least 1, not {self.stride!r}")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything one run needs. Frozen and validated on creation."""

    data: DataConfig = field(default_factory=DataConfig)
    features: tuple[str, ...] = PRESETS["central"]
    mode: str = "federated"
    rounds: int = 10  # federated rounds, or epochs over the pooled data when centralized
    patience: int = 7  # stop after this many rounds without a lower validation loss
    epochs: int = 4  # local epochs per round
    batch_size: int = 16
    clients_per_round: int | None = None  # None = every client
    client_optimizer: str = "adam"
    client_lr: float = 0.01
    server_optimizer: str = "sgd"
    server_lr: float = 1.0
    gru_units: int = 256
    dropout: float = 0.3
    embedding_dim: int = 16
    seed: int = 0
    client_dropout: float = 0.0  # probability a sampled client fails to report
    dp_clip: float | None = None  # L2 clipping norm for DP-FedAvg; None = no DP
    dp_noise: float = 0.0  # noise multiplier for DP-FedAvg
    workers: tuple[str, ...] = ()  # host:port of remote TFF workers; empty = local runtime
    personalize_epochs: int = 0  # local fine-tuning epochs per client before its test; 0 = the shared model only
    personalize_lr: float = 0.1  # plain SGD learning rate of that fine-tuning
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "workers", tuple(self.workers))
        _check(isinstance(self.data, DataConfig), "data must be a DataConfig")
        _check(len(self.features) > 0, "choose at least one feature")
        unknown = [f for f in self.features if f not in KNOWN_FEATURES]
        _check(not unknown, f"unknown feature {', '.join(map(repr, unknown))}; "
                            f"known features: {', '.join(KNOWN_FEATURES)}")
        _check(len(set(self.features)) == len(self.features), "a feature is listed twice")
        _check(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        for label, value in (("rounds", self.rounds), ("local epochs", self.epochs),
                             ("batch size", self.batch_size), ("patience", self.patience),
                             ("GRU units", self.gru_units), ("embedding size", self.embedding_dim)):
            _check(_is_int(value) and value >= 1, f"{label} must be a whole number of at least 1, not {value!r}")
        _check(self.clients_per_round is None or _is_int(self.clients_per_round) and self.clients_per_round >= 1,
               f"clients per round must be at least 1 (or all), not {self.clients_per_round!r}")
        for label, value in (("client optimizer", self.client_optimizer), ("server optimizer", self.server_optimizer)):
            _check(value in OPTIMIZERS, f"{label} must be one of {', '.join(OPTIMIZERS)}, not {value!r}")
        _check(_is_int(self.personalize_epochs) and self.personalize_epochs >= 0,
               f"fine-tuning epochs must be a whole number of 0 or more, not {self.personalize_epochs!r}")
        for label, value in (("client learning rate", self.client_lr), ("server learning rate", self.server_lr),
                             ("fine-tuning learning rate", self.personalize_lr)):
            _check(_is_number(value) and value > 0, f"{label} must be a number above 0, not {value!r}")
        _check(_is_number(self.dropout) and 0 <= self.dropout < 1, f"GRU dropout must be in [0, 1), not {self.dropout!r}")
        _check(_is_number(self.client_dropout) and 0 <= self.client_dropout < 1,
               f"client dropout must be in [0, 1), not {self.client_dropout!r}")
        _check(self.dp_clip is None or _is_number(self.dp_clip) and self.dp_clip > 0,
               f"DP clipping norm must be above 0, not {self.dp_clip!r}")
        _check(_is_number(self.dp_noise) and self.dp_noise >= 0, f"DP noise multiplier must be 0 or more, not {self.dp_noise!r}")
        _check(self.dp_noise == 0 or self.dp_clip is not None, "DP noise needs a clipping norm")
        _check(self.mode == "federated" or (self.dp_clip is None and self.client_dropout == 0 and not self.workers),
               "client dropout, differential privacy and workers apply to federated runs only")
        for worker in self.workers:
            host, _, port = worker.rpartition(":")
            _check(bool(host) and port.isdigit() and 0 < int(port) < 65536,
                   f"worker address must look like host:port, not {worker!r}")

    @property
    def model_shape_key(self) -> tuple:
        """What determines the built model and TFF processes (for caching them)."""
        return (self.features, self.data.n, self.batch_size, self.gru_units, self.dropout, self.embedding_dim,
                self.client_optimizer, self.client_lr, self.server_optimizer, self.server_lr,
                self.dp_clip, self.dp_noise)

    def replace(self, **changes: Any) -> "ExperimentConfig":
        # `data` given as a DataConfig replaces it whole; as a string it is the data path.
        if isinstance(changes.get("data"), DataConfig):
            return dataclasses.replace(self, **changes)
        data_changes = {k: changes.pop(k) for k in list(changes) if k in _DATA_FIELDS}
        data = dataclasses.replace(self.data, **data_changes) if data_changes else self.data
        return dataclasses.replace(self, data=data, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["features"] = list(self.features)
        out["workers"] = list(self.workers)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ExperimentConfig":
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        data = DataConfig(**{k: v for k, v in (raw.pop("data", None) or {}).items() if k in _DATA_FIELDS})
        return cls(data=data, **{k: v for k, v in raw.items() if k in known})


_DATA_FIELDS = {f.name for f in dataclasses.fields(DataConfig)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
