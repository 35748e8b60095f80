"""The one experiment configuration that flows through CLI, dashboard, engine and store.

Each setting is one dataclass field whose metadata (`setting(...)`) holds its label, help, bounds or
choices, CLI flag and form group. The checks below, the CLI options (fedlab.cli), the settings forms
(fedlab/dashboard/settings.py), the report's settings table and the run's one-line summary are all made from it, so a
new setting is one field here plus its use in the engine.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedlab.errors import ConfigError


def positive_int_from_env(name: str, default: int) -> int:
    """An environment setting that must be a whole number of at least 1 (`default` when unset or blank)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, not {text!r}")
    return value


# The attacks a config may name; fedlab.data.attacks carries them out.
ATTACKS = ("label-flip", "random-labels", "targeted")
ATTACK_HELP = {
    "label-flip": "Each malicious client maps every target to another category by one fixed permutation.",
    "random-labels": "Each malicious client replaces its targets with categories drawn at random.",
    "targeted": "Each malicious client relabels every target of class A as class B, so the shared model learns to "
    "say B where the truth is A; set the classes as A:B.",
}


def parse_pair(text: str) -> tuple[str, str]:
    """ "A:B" -> ("A", "B"): the syntax only; the names are checked against the data by `resolve_pair`."""
    a, sep, b = (text or "").partition(":")
    a, b = a.strip(), b.strip()
    if not sep or not a or not b:
        raise ConfigError(f"the targeted attack needs its classes as A:B (e.g. Bar:Cafe), not {text!r}")
    if a.lower() == b.lower():
        raise ConfigError(f"the targeted attack needs two different classes, not {text!r}")
    return a, b


CYCLIC_TIME_FEATURES = (
    "clock_sin",
    "clock_cos",
    "day_sin",
    "day_cos",
    "month_sin",
    "month_cos",
    "week_day_sin",
    "week_day_cos",
)
# The study's column order.
ALL_FEATURES = (
    "cat_id",
    "user_id",
    "latitude",
    "longitude",
    "is_weekend",
    *CYCLIC_TIME_FEATURES,
    "venue_id",
    "orig_cat_id",
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
# Settings that train in about half a minute on two cores (the Train page's "Quick demo" button): the default 100
# users, which the shard path trains in a few TFF calls, with a smaller GRU and fewer rounds.
QUICK_DEMO = {
    "features": PRESETS["central"],
    "gru_units": 64,
    "top_users": 100,
    "rounds": 5,
    "epochs": 3,
    "dropout": 0.0,
}
# The Federated Reconstruction setting chosen on the validation accuracy of the real NYC data, median of seeds 0-2
# (docs/results.md, "Personal by design"), for the Train page's "FedRecon, best" button; the rest stays as the
# form has it.
RECONSTRUCTION_BEST = {
    "features": PRESETS["habits"],
    "reconstruction": True,
    "rounds": 20,
    "client_optimizer": "sgd",
    "client_lr": 0.3,
    "server_optimizer": "adam",
    "server_lr": 0.01,
    "local_part": "user",
    "reconstruction_lr": 0.1,
    "reconstruction_epochs": 1,
}
GROUPINGS = ("uber", "root", "fine")
GROUPING_NAMES = {
    "uber": "27 groups of the study",
    "root": "10 Foursquare top-level categories",
    "fine": "every Foursquare category",
}
MODES = ("federated", "centralized")
OPTIMIZERS = ("sgd", "adam")
ALGORITHMS = ("fedavg", "fedprox", "mime")
ALGORITHM_HELP = {
    "fedavg": "Clients train locally and the server averages their updates; the baseline, best when clients are alike.",
    "fedprox": "Adds a proximal term (strength mu) to each client's loss, which limits client drift when clients' "
    "data differ (fedlab's own client work: TFF 0.87's FedProx adds the term's gradient with the wrong sign).",
    "mime": "MIME-lite: clients step with the server's optimizer state (e.g. Adam's moments) held fixed, so local "
    "steps follow the global direction; helps with non-IID clients and adaptive optimizers.",
}
SERVER_OPTIMIZERS = ("sgd", "sgdm", "adam", "yogi", "adagrad")
SERVER_OPTIMIZER_HELP = {
    "sgd": "Applies the averaged update as it is (rate 1 = plain FedAvg).",
    "sgdm": "FedAvgM: adds server momentum, which smooths noisy rounds when few clients are sampled.",
    "adam": "FedAdam: per-weight adaptive steps, which help when updates differ much in scale (e.g. embeddings).",
    "yogi": "FedYogi: like FedAdam with a more careful growth of the step size, steadier on very non-IID data.",
    "adagrad": "FedAdagrad: steps shrink for weights that keep changing, which suits sparse updates.",
}
# Secure aggregation runs TFF's secure aggregator with the secure sums computed in the clear (the numbers, not the
# cryptography); what it cannot be combined with, each as one sentence why.
SECURE_WITH_DEFENSE = (
    "secure aggregation and a defence cannot be combined: the server sees only the sum, so it cannot inspect or "
    "drop single updates"
)
# Measured here: building TFF's ddp_secure_aggregator's learning process raises DecodeError in building_blocks.py
# (Block._proto): protobuf's upb runtime copies a sub-message by serialising and parsing it, and its parser stops at
# 100 nested messages (a chain of 34 TFF Blocks already fails), which that computation exceeds. With protobuf's
# pure-Python runtime (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python) it builds and trains, but one FedAvg round of a
# model of 8 weights on two clients of 8 examples took 1,636 s on this machine: no run of fedlab's model could finish.
DISTRIBUTED_DP_UNAVAILABLE = (
    "secure aggregation with differential privacy (TFF's distributed DP, ddp_secure_aggregator) cannot run here: "
    "its computation nests deeper than the 100 levels protobuf's upb parser accepts (DecodeError in TFF's "
    "building_blocks.py), and protobuf's pure-Python parser takes minutes per round; use DP without secure aggregation"
)
SECURE_WITH_COMPRESSION = (
    "secure aggregation and compression cannot be combined: TFF's compressed sum (EncodedSumFactory) sums its "
    "encoding in the clear and takes no secure sum inside"
)
# Features whose layers describe one user: what Federated Reconstruction keeps on the client.
USER_FEATURES = ("user_id", *HABIT_FEATURES)
# Plain SGD rate at which a client re-learns its local part (TFF's default reconstruction rate).
RECONSTRUCTION_LR = 0.1
# Which layers Federated Reconstruction keeps on the client, and the features each needs.
LOCAL_PARTS = ("user", "user-embedding", "habit-path", "user+output")
LOCAL_PART_HELP = {
    "user": "the user_id embedding and the habit path (whichever the features have).",
    "user-embedding": "the user_id embedding only; the habit path is shared.",
    "habit-path": "the habit path only; the user_id embedding is shared.",
    "user+output": "the user part and the output layer: each client re-learns its own last layer too.",
}
LOCAL_PART_NEEDS = {"user-embedding": "user_id", "habit-path": "user_habits"}
DEFENSES = ("none", "clip", "zeroing", "robust", "median", "trimmed-mean", "multi-krum", "norm-bound")
DEFENSE_HELP = {
    "none": "Every update is averaged as it is.",
    "clip": "Scales each update down to at most the clipping norm, so no client moves the model further than that.",
    "zeroing": "Drops (zeroes) updates far longer than most (TFF's adaptive estimate), the signature of a scaled-up "
    "attack; leaves ordinary-sized poisoned updates in.",
    "robust": "TFF's robust aggregator: adaptive zeroing of outliers, then adaptive clipping at its estimate of the "
    "0.8 quantile of the update norms.",
    "median": "Coordinate-wise median: each value of the new update is the median of the clients' values, so a "
    "minority of clients cannot drag it far.",
    "trimmed-mean": "Trimmed mean: for each value, the clients' largest and smallest (the share beta at each end) are "
    "cut and the rest averaged.",
    "multi-krum": "Multi-Krum: each update is scored by its distance to its nearest neighbours, and only the n - f "
    "closest to the crowd (f = assumed attackers) are averaged.",
    "norm-bound": "Norm bounding with a little noise (Sun et al. 2019): each update is clipped to the clipping norm "
    "and small Gaussian noise is added to their mean, against targeted (backdoor) attacks.",
}
# Defences that need every client's update at the server (fedlab.learning.robust_aggregators).
GATHERING_DEFENSES = ("median", "trimmed-mean", "multi-krum")
# Uniform quantisation bit widths TFF's encoders support for a model update (0 = off).
COMPRESSION_BITS = (2, 16)
KINDS = ("int", "float", "choice", "bool", "features", "path", "text", "list")
# Form groups: where a setting's widget is drawn; "source" settings come from the sidebar's data source.
GROUPS = ("features", "main", "advanced", "what_if", "name", "workers", "source")


@dataclass(frozen=True)
class Switch:
    """A form-only checkbox that turns settings on; while it is off they keep their defaults (DP)."""

    key: str
    label: str
    help: str


@dataclass(frozen=True, kw_only=True)
class Setting:
    """What every view of one setting needs: label, help, bounds or choices, flag and widget."""

    label: str  # form label and report row
    help: str
    kind: str  # one of KINDS
    noun: str = ""  # how messages name it; default the label in lower case
    min: float | None = None
    max: float | None = None
    above: bool = False  # min itself is not allowed
    below: bool = False  # max itself is not allowed
    why: str = ""  # said after a bound in the message
    choices: tuple = ()
    choice_labels: Mapping[str, str] = field(default_factory=dict)
    choice_help: Mapping[str, str] = field(default_factory=dict)  # one sentence per choice, for the form's help
    none: str | None = None  # what None (or an empty list) means, when it is allowed ("all", "off")
    flag: str = ""  # CLI option; default --field-name
    group: str = "main"
    widget: str = ""  # "radio" for a choice drawn as a radio; default by kind
    step: float | None = None
    format: str | None = None
    switch: Switch | None = None
    on_value: Any = None  # what a switched field shows before its switch is first turned on
    operand: str = ""  # a text field that an optional second word of this choice's CLI option fills
    # The run's one-line summary: a format of {value}, {text} (as shown) and the other settings by name;
    # shown always, or only when the value is not the default.
    summary: str = ""
    summary_always: bool = False

    def __post_init__(self):
        assert self.kind in KINDS and self.group in GROUPS, (self.kind, self.group)

    @property
    def form_help(self) -> str:
        """The help, followed by each choice's sentence when the choices carry one."""
        return " ".join(
            [self.help, *(f"**{c}**: {self.choice_help[c]}" for c in self.choices if c in self.choice_help)]
        )

    @property
    def name_in_messages(self) -> str:
        return self.noun or self.label.lower()

    def problem(self, value: Any) -> str | None:
        """The one-line message for a value these bounds refuse, or None when it is allowed."""
        if value is None:
            return None if self.none is not None else self._refused("set", value)
        if self.kind in ("int", "float"):
            return self._number_problem(value)
        if self.kind == "choice":
            return (
                None
                if value in self.choices
                else (f"{self.name_in_messages} must be one of {', '.join(self.choices)}, not {value!r}")
            )
        if self.kind == "bool":
            return None if isinstance(value, bool) else self._refused("yes or no (true or false)", value)
        if self.kind in ("path", "text"):
            return None if isinstance(value, str) else self._refused("text", value)
        if self.kind == "list":
            return None if all(isinstance(v, str) for v in value) else self._refused("a list of text", value)
        return None  # features: checked by ExperimentConfig, which names the unknown ones

    def _number_problem(self, value: Any) -> str | None:
        whole = self.kind == "int"
        kind_ok = _is_int(value) if whole else _is_number(value)
        low = self.min is not None and (not kind_ok or value < self.min or self.above and value == self.min)
        high = self.max is not None and (not kind_ok or value > self.max or self.below and value == self.max)
        if kind_ok and not low and not high:
            return None
        number = "a whole number" if whole else "a number"
        if low or self.max is None:
            bound = "" if self.min is None else (" above " if self.above else " of at least ") + _text(self.min)
        else:
            bound = (" below " if self.below else " of at most ") + _text(self.max)
        return self._refused(number + bound, value)

    def _refused(self, requirement: str, value: Any) -> str:
        why = f" ({self.why})" if self.why else ""
        alternative = f" (or {self.none})" if self.none and " " not in self.none else ""
        return f"{self.name_in_messages} must be {requirement}{why}{alternative}, not {value!r}"


def setting(**kwargs: Any) -> dict[str, Setting]:
    """Field metadata: `field(default=4, metadata=setting(label=..., help=..., kind="int", min=1))`."""
    return {"setting": Setting(**kwargs)}


DP = Switch(
    "dp",
    "Differential privacy",
    "DP-FedAvg: clip each client's update and add Gaussian noise to their sum, so the model reveals little "
    "about any one user. Costs accuracy.",
)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """What turns a check-in file into client sequences; the cache key for preprocessing."""

    n: int = field(
        default=17,
        metadata=setting(
            label="Sequence length N (check-ins)",
            kind="int",
            summary="N{text}",
            summary_always=True,
            min=2,
            max=500,
            noun="N",
            why="one input and one target check-in",
            help="Check-ins per sequence: the GRU reads N-1 and predicts the next category after each. The study "
            "used 17.",
        ),
    )
    top_users: int | None = field(
        default=100,
        metadata=setting(
            label="Users (clients)",
            kind="int",
            summary="{text} users",
            summary_always=True,
            min=1,
            max=100_000,
            none="all",
            noun="top users",
            help="The K users with the most check-ins; each becomes one federated client. Fewer users train faster.",
        ),
    )
    grouping: str = field(
        default="uber",
        metadata=setting(
            label="Category grouping",
            kind="choice",
            summary="{text}",
            summary_always=True,
            choices=GROUPINGS,
            choice_labels=GROUPING_NAMES,
            group="advanced",
            noun="grouping",
            help="Which classes the model predicts.",
        ),
    )
    stride: int | None = field(
        default=None,
        metadata=setting(
            label="Sequence stride",
            kind="int",
            summary="stride {text}",
            min=1,
            max=500,
            none="N (no overlap)",
            group="advanced",
            noun="stride",
            help="Sliding-window step between training sequences; empty = N (no overlap). Smaller makes more, "
            "overlapping training sequences; validation and test never overlap.",
        ),
    )
    iid: bool = field(
        default=False,
        metadata=setting(
            label="IID clients",
            kind="bool",
            summary="IID clients",
            group="advanced",
            noun="IID clients",
            help="Deal the sequences to clients at random (same sizes). Removes the clients' differences, to see "
            "how much non-IID data costs.",
        ),
    )
    data: str | None = field(
        default=None,
        metadata=setting(
            label="Check-in file",
            kind="path",
            summary="{file}",
            summary_always=True,
            none="synthetic city",
            group="source",
            noun="check-in file",
            help="A check-in file (raw TSMC2014 or CSV, optionally .gz/.zip); none: the synthetic city.",
        ),
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata=setting(
            label="Skip bad rows",
            kind="bool",
            group="source",
            noun="skip bad rows",
            help="Drop rows that cannot be read and count them, instead of stopping at the first one.",
        ),
    )

    def __post_init__(self):
        _check_settings(self)


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything one run needs. Frozen and validated on creation; `seed` is the run's only seed."""

    data: DataConfig = field(default_factory=DataConfig)
    features: tuple[str, ...] = field(
        default=PRESETS["central"],
        metadata=setting(
            label="Input features",
            kind="features",
            summary="{text}",
            summary_always=True,
            choices=KNOWN_FEATURES,
            group="features",
            help="What the GRU sees about each past check-in; it always predicts the category of the next one.",
        ),
    )
    mode: str = field(
        default="federated",
        metadata=setting(
            label="Training mode",
            kind="choice",
            summary="{text}",
            summary_always=True,
            choices=MODES,
            widget="radio",
            noun="mode",
            choice_labels={"federated": "federated (FedAvg)", "centralized": "centralized"},
            help="Federated: data stays with each client and only model updates travel. Centralized: the same model "
            "trained on all check-ins pooled (a reference point).",
        ),
    )
    rounds: int = field(
        default=10,
        metadata=setting(
            label="Rounds",
            kind="int",
            summary="{text} rounds",
            summary_always=True,
            min=1,
            max=1000,
            noun="rounds",
            help="Most federated rounds (epochs when centralized). Training stops earlier when the validation loss "
            "has not improved for 'patience' rounds.",
        ),
    )
    epochs: int = field(
        default=4,
        metadata=setting(
            label="Local epochs per round",
            kind="int",
            summary="{text} local epochs",
            summary_always=True,
            min=1,
            max=100,
            noun="local epochs",
            help="Passes each client makes over its own data before sending its update. The study used 4.",
        ),
    )
    batch_size: int = field(
        default=16,
        metadata=setting(
            label="Batch size (sequences)",
            kind="int",
            summary="batch {text}",
            summary_always=True,
            min=1,
            max=4096,
            noun="batch size",
            help="Sequences per gradient step on a client. The study used 16.",
        ),
    )
    clients_per_round: int | None = field(
        default=None,
        metadata=setting(
            label="Clients per round",
            kind="int",
            summary="{text} clients per round",
            summary_always=True,
            min=1,
            max=100_000,
            none="all",
            help="How many clients the server samples each round. Empty = all of them.",
        ),
    )
    gru_units: int = field(
        default=256,
        metadata=setting(
            label="GRU units",
            kind="int",
            summary="GRU {text}",
            summary_always=True,
            min=1,
            max=2048,
            noun="GRU units",
            help="Size of the GRU's memory. 256 as in the study; 8–32 trains in seconds for a demo.",
        ),
    )
    client_optimizer: str = field(
        default="adam",
        metadata=setting(
            label="Client optimizer",
            kind="choice",
            choices=OPTIMIZERS,
            group="advanced",
            help="Optimizer of the local training on each client (and of centralized training).",
        ),
    )
    client_lr: float = field(
        default=0.01,
        metadata=setting(
            label="Client learning rate",
            kind="float",
            min=0.0,
            above=True,
            max=10.0,
            group="advanced",
            step=0.001,
            format="%.4f",
            help="Step size of the client optimizer; must be above 0.",
        ),
    )
    seed: int = field(
        default=0,
        metadata=setting(
            label="Random seed",
            kind="int",
            summary="seed {text}",
            min=0,
            max=2**31 - 1,
            group="advanced",
            noun="seed",
            help="Same seed + same settings = the same run (initial model, client sampling, IID reshuffle).",
        ),
    )
    algorithm: str = field(
        default="fedavg",
        metadata=setting(
            label="Algorithm",
            kind="choice",
            choices=ALGORITHMS,
            choice_help=ALGORITHM_HELP,
            group="advanced",
            summary="{text}",
            noun="algorithm",
            choice_labels={"fedavg": "FedAvg", "fedprox": "FedProx", "mime": "MIME-lite"},
            help="How clients train and how the server combines their work (TFF's own algorithms).",
        ),
    )
    prox_mu: float = field(
        default=0.01,
        metadata=setting(
            label="FedProx strength mu",
            kind="float",
            min=0.0,
            max=100.0,
            group="advanced",
            noun="FedProx mu",
            step=0.001,
            format="%.4f",
            help="FedProx only: weight of the proximal term (mu/2)·||w - w_global||² in each client's loss, which "
            "keeps clients near the global model; 0 = FedAvg. fedlab trains it with its own client work: TFF 0.87 "
            "adds mu·(w_global - w), the wrong sign (proximal_client_work.py, line 90), and is not used.",
        ),
    )
    server_optimizer: str = field(
        default="sgd",
        metadata=setting(
            label="Server optimizer",
            kind="choice",
            choices=SERVER_OPTIMIZERS,
            choice_help=SERVER_OPTIMIZER_HELP,
            group="advanced",
            summary="server {text}",
            choice_labels={
                "sgd": "SGD",
                "sgdm": "SGD + momentum (FedAvgM)",
                "adam": "Adam (FedAdam)",
                "yogi": "Yogi (FedYogi)",
                "adagrad": "Adagrad (FedAdagrad)",
            },
            help="How the server applies the averaged update. SGD with rate 1.0 = plain FedAvg.",
        ),
    )
    server_momentum: float = field(
        default=0.9,
        metadata=setting(
            label="Server momentum",
            kind="float",
            min=0.0,
            max=1.0,
            below=True,
            group="advanced",
            noun="server momentum",
            step=0.05,
            format="%.2f",
            help="Momentum of the server's SGD when the server optimizer is sgdm (FedAvgM); below 1.",
        ),
    )
    server_lr: float = field(
        default=1.0,
        metadata=setting(
            label="Server learning rate",
            kind="float",
            min=0.0,
            above=True,
            max=100.0,
            group="advanced",
            step=0.1,
            format="%.3f",
            help="Step size of the server optimizer; must be above 0.",
        ),
    )
    patience: int = field(
        default=7,
        metadata=setting(
            label="Patience (rounds)",
            kind="int",
            min=1,
            max=1000,
            noun="patience",
            group="advanced",
            help="Stop after this many rounds without a lower validation loss.",
        ),
    )
    dropout: float = field(
        default=0.3,
        metadata=setting(
            label="GRU input dropout",
            kind="float",
            min=0.0,
            max=1.0,
            below=True,
            group="advanced",
            noun="GRU dropout",
            step=0.05,
            format="%.2f",
            help="Share of the GRU's inputs dropped at random while training (against overfitting); below 1.",
        ),
    )
    embedding_dim: int = field(
        default=16,
        metadata=setting(
            label="Embedding size",
            kind="int",
            min=1,
            max=1024,
            group="advanced",
            help="Length of the learned vector for each user, venue and fine category id (large vocabularies).",
        ),
    )
    personalize_epochs: int = field(
        default=0,
        metadata=setting(
            label="Fine-tune epochs before test",
            kind="int",
            summary="fine-tuned {text} epochs per client before the test",
            min=0,
            max=50,
            group="advanced",
            noun="fine-tuning epochs",
            help="Personalisation: before the test, each client trains the final shared model for this many epochs "
            "on its own earlier check-ins (plain SGD) and is scored with that. Reported beside the shared "
            "model's accuracy. 0 = off.",
        ),
    )
    personalize_lr: float = field(
        default=0.1,
        metadata=setting(
            label="Fine-tuning learning rate",
            kind="float",
            min=0.0,
            above=True,
            max=10.0,
            group="advanced",
            step=0.01,
            format="%.3f",
            help="Plain SGD learning rate of that fine-tuning; must be above 0.",
        ),
    )
    client_dropout: float = field(
        default=0.0,
        metadata=setting(
            label="Client dropout (share failing)",
            kind="float",
            summary="client dropout {value:.0%}",
            min=0.0,
            max=0.95,
            group="what_if",
            noun="client dropout",
            step=0.05,
            format="%.2f",
            help="Probability that a sampled client fails to send its update (a phone goes offline). 0 = every "
            "sampled client reports.",
        ),
    )
    dp_clip: float | None = field(
        default=None,
        metadata=setting(
            label="DP clipping norm",
            noun="DP clipping norm",
            kind="float",
            summary="DP clip {value:g} noise {dp_noise:g}",
            min=0.0,
            above=True,
            max=100.0,
            none="off",
            group="what_if",
            switch=DP,
            on_value=1.0,
            step=0.1,
            format="%.2f",
            help="Each client's update is scaled down to at most this length (L2 norm); must be above 0.",
        ),
    )
    dp_noise: float = field(
        default=0.0,
        metadata=setting(
            label="DP noise multiplier",
            kind="float",
            noun="DP noise multiplier",
            min=0.0,
            max=100.0,
            group="what_if",
            switch=DP,
            on_value=1.0,
            step=0.1,
            format="%.2f",
            help="Noise added to the sum of updates, in units of the clipping norm. More noise = more private, "
            "less accurate.",
        ),
    )
    compression_bits: int = field(
        default=0,
        metadata=setting(
            label="Compression (bits per value)",
            kind="int",
            summary="{text}-bit updates",
            min=0,
            max=COMPRESSION_BITS[1],
            group="what_if",
            noun="compression bits",
            step=1,
            help="Clients send their update uniformly quantised to this many bits per value, after a random "
            "Hadamard rotation (TFF's compression aggregator). 0 = off (32-bit floats); 2-16 allowed.",
        ),
    )
    secure_aggregation: bool = field(
        default=False,
        metadata=setting(
            label="Secure aggregation",
            kind="bool",
            summary="secure aggregation",
            group="what_if",
            noun="secure aggregation",
            help="The server learns only the sum of the clients' updates. TFF's secure aggregator clips each value "
            "to bounds estimated every round and sums them as 32-bit integers modulo 2^32. Simulated: the numbers "
            "are the ones secure aggregation produces, but no key exchange or masking runs.",
        ),
    )
    reconstruction: bool = field(
        default=False,
        metadata=setting(
            label="Keep the user part local (Federated Reconstruction)",
            kind="bool",
            summary="user part local (Federated Reconstruction)",
            group="what_if",
            noun="reconstruction",
            help="The user_id embedding and the habit path stay on each client, never sent or averaged (TFF's "
            "FedRecon): each client re-learns them on its own data before it trains and before its test. Needs "
            "user_id or user_habits among the features.",
        ),
    )
    local_part: str = field(
        default="user",
        metadata=setting(
            label="Local part (Federated Reconstruction)",
            kind="choice",
            summary="local part {value}",
            choices=LOCAL_PARTS,
            choice_help=LOCAL_PART_HELP,
            group="advanced",
            noun="local part",
            help="Reconstruction only: which layers stay on each client and are re-learnt there every round.",
        ),
    )
    reconstruction_lr: float = field(
        default=RECONSTRUCTION_LR,
        metadata=setting(
            label="Reconstruction learning rate",
            kind="float",
            summary="reconstruction rate {value:g}",
            min=0.0,
            above=True,
            max=10.0,
            group="advanced",
            step=0.01,
            format="%.3f",
            noun="reconstruction rate",
            help="Reconstruction only: plain SGD step with which each client re-learns its local part, in training, "
            "validation and test (TFF's default is 0.1).",
        ),
    )
    reconstruction_epochs: int = field(
        default=1,
        metadata=setting(
            label="Reconstruction passes",
            kind="int",
            summary="{value} reconstruction passes",
            min=1,
            max=20,
            group="advanced",
            noun="reconstruction passes",
            help="Reconstruction only: passes over the client's round data (its local epochs) that re-learn the "
            "local part before the shared part trains; the test re-learns for as many.",
        ),
    )
    malicious_clients: float = field(
        default=0.0,
        metadata=setting(
            label="Malicious clients (share)",
            kind="float",
            summary="{value:.0%} malicious clients ({attack})",
            min=0.0,
            max=1.0,
            below=True,
            group="what_if",
            noun="malicious client share",
            step=0.05,
            format="%.2f",
            help="Share of the clients that poison their training data, drawn once with the run's seed and kept for "
            "the whole run. Validation and test data are never poisoned. 0 = every client is honest.",
        ),
    )
    attack: str = field(
        default="label-flip",
        metadata=setting(
            label="Attack",
            kind="choice",
            choices=ATTACKS,
            choice_help=ATTACK_HELP,
            operand="attack_classes",
            group="what_if",
            help="How the malicious clients poison their training targets (when the malicious share is above 0).",
        ),
    )
    attack_classes: str = field(
        default="",
        metadata=setting(
            label="Targeted classes (A:B)",
            kind="text",
            group="what_if",
            noun="targeted classes",
            summary="{value}",
            help="For the targeted attack: every true class A in the malicious clients' training data is relabelled "
            "B, e.g. Bar:Cafe (category names of the data, any case).",
        ),
    )
    defense: str = field(
        default="none",
        metadata=setting(
            label="Defence",
            kind="choice",
            choices=DEFENSES,
            choice_help=DEFENSE_HELP,
            summary="{text} defence",
            group="what_if",
            noun="defence",
            help="How the server limits what one client's update can do (TFF's robust aggregators, and the robust "
            "rules of the literature); each round records how many updates it clipped and zeroed (multi-Krum: left "
            "out). Median, trimmed mean and multi-Krum need every update at the server: in this simulation it holds "
            "them all, but they cannot be combined with secure aggregation.",
        ),
    )
    clip_norm: float | None = field(
        default=None,
        metadata=setting(
            label="Defence clipping norm",
            kind="float",
            summary="clip norm {value:g}",
            min=0.0,
            above=True,
            max=1000.0,
            none="adaptive",
            group="what_if",
            noun="defence clipping norm",
            step=0.1,
            format="%.2f",
            help="For the clip and norm-bound defences: each update is scaled down to at most this L2 norm. Empty = "
            "adaptive (TFF's estimate of the 0.8 quantile of the update norms, updated every round).",
        ),
    )
    trim_beta: float = field(
        default=0.1,
        metadata=setting(
            label="Trimmed mean: share cut at each end (beta)",
            kind="float",
            summary="beta {value:g}",
            min=0.0,
            max=0.5,
            below=True,
            group="what_if",
            noun="trimmed mean beta",
            step=0.05,
            format="%.2f",
            help="For the trimmed-mean defence: of each value, the clients' largest and smallest (this share of the "
            "clients at each end) are cut before averaging. 0 = the plain mean.",
        ),
    )
    krum_byzantine: int | None = field(
        default=None,
        metadata=setting(
            label="Multi-Krum: attackers assumed (f)",
            kind="int",
            summary="f = {value}",
            min=0,
            max=10000,
            none="the malicious share",
            group="what_if",
            noun="multi-krum attackers",
            help="For the multi-krum defence: how many attackers the server assumes among a round's n updates; it "
            "averages the n - f updates closest to their neighbours. Empty = the run's malicious share of n (the "
            "best case: the server guesses right).",
        ),
    )
    bound_noise: float = field(
        default=0.001,
        metadata=setting(
            label="Norm bounding: noise (standard deviation)",
            kind="float",
            summary="noise {value:g}",
            min=0.0,
            max=1.0,
            group="what_if",
            noun="norm-bound noise",
            step=0.001,
            format="%.4f",
            help="For the norm-bound defence: the standard deviation of the Gaussian noise added to each value of "
            "the mean update. 0 = clipping only.",
        ),
    )
    name: str = field(
        default="",
        metadata=setting(
            label="Run name (optional)",
            kind="text",
            group="name",
            noun="run name",
            help="Shown in the run list and on charts. Empty = made from the settings.",
        ),
    )
    workers: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            label="Workers",
            kind="list",
            summary="on workers {text}",
            none="this machine",
            group="workers",
            help="Train across TFF workers, as host:port,host:port. Start each with `python -m fedlab worker --port "
            "8000 --allow-remote` on a private network (see the README). Empty = this machine.",
        ),
    )

    one_client_per_user: bool = field(
        default=False,
        metadata=setting(
            label="One TFF client per user",
            kind="bool",
            summary="one TFF client per user",
            group="advanced",
            noun="one client per user",
            help="Run each user's training as its own TFF client call, as TFF places clients. Off = users are "
            "trained in a few shards, many users per TFF client call: the same FedAvg, several times faster. "
            "Settings that act on each user's update (DP, compression, defences, FedRecon, FedProx, MIME-lite) "
            "always run one client per user.",
        ),
    )

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "workers", tuple(self.workers))
        _check(isinstance(self.data, DataConfig), "data must be a DataConfig")
        _check(len(self.features) > 0, "choose at least one feature")
        unknown = [f for f in self.features if f not in KNOWN_FEATURES]
        _check(
            not unknown, f"unknown feature {', '.join(map(repr, unknown))}; known features: {', '.join(KNOWN_FEATURES)}"
        )
        _check(len(set(self.features)) == len(self.features), "a feature is listed twice")
        _check_settings(self)
        _check(self.dp_noise == 0 or self.dp_clip is not None, "DP noise needs a clipping norm")
        _check(
            self.mode == "federated" or (self.dp_clip is None and self.client_dropout == 0 and not self.workers),
            "client dropout, differential privacy and workers apply to federated runs only",
        )
        _check(
            self.compression_bits == 0 or self.compression_bits >= COMPRESSION_BITS[0],
            f"compression bits must be 0 (off) or {COMPRESSION_BITS[0]}-{COMPRESSION_BITS[1]}, "
            f"not {self.compression_bits}",
        )
        _check(
            self.mode == "federated" or (self.compression_bits == 0 and not self.secure_aggregation),
            "compression and secure aggregation apply to federated runs only",
        )
        _check(
            self.mode == "federated" or (self.malicious_clients == 0 and self.defense == "none"),
            "attacks and defences apply to federated runs only",
        )
        if self.malicious_clients > 0 and self.attack == "targeted":
            parse_pair(self.attack_classes)
        for message in _aggregation_conflicts(self):
            raise ConfigError(message)
        for message in _reconstruction_conflicts(self):
            raise ConfigError(message)
        for worker in self.workers:
            host, _, port = worker.rpartition(":")
            _check(
                bool(host) and port.isdigit() and 0 < int(port) < 65536,
                f"worker address must look like host:port, not {worker!r}",
            )

    @property
    def model_shape_key(self) -> tuple:
        """What determines the built model and TFF processes (for caching them)."""
        return (
            self.features,
            self.data.n,
            self.batch_size,
            self.gru_units,
            self.dropout,
            self.embedding_dim,
            self.client_optimizer,
            self.client_lr,
            self.server_optimizer,
            self.server_lr,
            self.dp_clip,
            self.dp_noise,
            self.algorithm,
            self.prox_mu,
            self.server_momentum,
            self.compression_bits,
            self.secure_aggregation,
            self.reconstruction,
            self.local_part,
            self.reconstruction_lr,
            self.reconstruction_epochs,
            self.defense,
            self.clip_norm,
            training_path(self)[0],
            self.trim_beta,
            self.krum_byzantine,
            self.bound_noise,
            # multi-Krum's default f comes from the malicious share
            self.malicious_clients if self.defense == "multi-krum" and self.krum_byzantine is None else None,
        )

    def value(self, name: str) -> Any:
        """A setting by its field name, from this config or its data config."""
        return getattr(self.data, name) if name in _DATA_FIELDS else getattr(self, name)

    def replace(self, **changes: Any) -> ExperimentConfig:
        # `data` given as a DataConfig replaces it whole; as a string (or None) it is the data path.
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
    def from_dict(cls, raw: dict[str, Any]) -> ExperimentConfig:
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        data_raw = dict(raw.pop("data", None) or {})
        if "seed" in data_raw and "seed" not in raw:  # runs stored when the data config had its own seed
            raw["seed"] = data_raw["seed"]
        data = DataConfig(**{k: v for k, v in data_raw.items() if k in _DATA_FIELDS})
        return cls(data=data, **{k: v for k, v in raw.items() if k in known})


SHARDS, PER_USER = "shards", "per user"


def training_path(config: ExperimentConfig) -> tuple[str, str]:
    """(how a federated run's rounds train, why): SHARDS (many users per TFF client call, the same weighted FedAvg)
    or PER_USER (one TFF client per user: a setting acts on each user's update inside TFF's own per-client work or
    aggregator, or it was asked for). Centralized runs say PER_USER with the reason that nothing is federated."""
    if config.mode != "federated":
        return PER_USER, "centralized: no federated rounds"
    reasons = (
        (config.one_client_per_user, "one TFF client per user was asked for"),
        (config.algorithm == "fedprox", "FedProx's proximal term runs in fedlab's own per-user client work"),
        (config.algorithm == "mime", "MIME-lite's client steps run in TFF's own client work"),
        (config.dp_clip is not None, "DP clips each user's update"),
        (config.compression_bits > 0, "compression quantises each user's update"),
        (config.defense != "none", "the defence clips or zeroes each user's update"),
        (config.secure_aggregation, "secure aggregation sums each user's update"),
    )
    for applies, why in reasons:
        if applies:
            return PER_USER, why
    same = "FedRecon" if config.reconstruction else "weighted FedAvg"
    return SHARDS, f"many users per TFF client call, the same {same}"


def training_path_text(config: ExperimentConfig) -> str:
    """The path and its reason as one phrase, e.g. "per user: DP clips each user's update"."""
    path, why = training_path(config)
    return f"{path}: {why}"


def settings() -> Iterator[tuple[str, Setting, Any]]:
    """(field name, its Setting, its default) of every setting: the data config's, then the experiment's."""
    for cls in (DataConfig, ExperimentConfig):
        for f in dataclasses.fields(cls):
            if "setting" in f.metadata:
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                yield f.name, f.metadata["setting"], default


def setting_of(name: str) -> Setting:
    return _SETTINGS[name]


def is_data_setting(name: str) -> bool:
    return name in _DATA_FIELDS


_DATA_FIELDS = {f.name for f in dataclasses.fields(DataConfig)}
_SETTINGS = {name: s for name, s, _ in settings()}


def _check_settings(config: DataConfig | ExperimentConfig) -> None:
    """The bounds and choices of each field's Setting, in field order; the first refused value raises."""
    for f in dataclasses.fields(config):
        if "setting" in f.metadata and (problem := f.metadata["setting"].problem(getattr(config, f.name))):
            raise ConfigError(problem)


def _aggregation_conflicts(config: ExperimentConfig) -> Iterator[str]:
    """Settings (or combinations) that TFF cannot build or run here, each as one sentence why."""
    gathering = config.defense in GATHERING_DEFENSES
    if gathering and config.secure_aggregation:
        yield (
            f"the {config.defense} defence needs every update at the server, so it cannot be combined with secure "
            "aggregation, which shows the server only their sum"
        )
    if config.secure_aggregation and config.defense != "none":
        yield SECURE_WITH_DEFENSE
    if config.secure_aggregation and config.compression_bits:
        yield SECURE_WITH_COMPRESSION
    if config.secure_aggregation and config.dp_clip is not None:
        yield DISTRIBUTED_DP_UNAVAILABLE
    if gathering and (config.dp_clip is not None or config.compression_bits):
        yield (
            f"the {config.defense} defence needs every update at the server as it is, so it cannot be combined with "
            f"{'differential privacy' if config.dp_clip is not None else 'compression'}"
        )
    if config.defense != "none" and config.dp_clip is not None:
        yield "a defence and differential privacy cannot be combined: DP already clips every update at its norm"
    if config.defense != "none" and config.compression_bits:
        yield (
            "a defence and compression cannot be combined: TFF's robust aggregators average float updates, so the "
            "compressed sum cannot go inside them"
        )


def _reconstruction_conflicts(config: ExperimentConfig) -> Iterator[str]:
    """What Federated Reconstruction cannot be combined with, each as one sentence why."""
    if not config.reconstruction:
        return
    if config.mode != "federated":
        yield "reconstruction applies to federated runs only"
    elif not any(f in USER_FEATURES for f in config.features):
        yield (
            "reconstruction keeps the user part on the client, so it needs user_id or user_habits among the "
            "features (the biggest or habits preset)"
        )
    elif config.local_part in LOCAL_PART_NEEDS and LOCAL_PART_NEEDS[config.local_part] not in config.features:
        yield f"the local part {config.local_part} needs the feature {LOCAL_PART_NEEDS[config.local_part]}"
    elif config.algorithm != "fedavg":
        yield "reconstruction trains with TFF's FedRecon, which has no FedProx or MIME-lite form; choose fedavg"
    elif config.personalize_epochs:
        yield (
            "reconstruction and fine-tuning cannot be combined: each client already re-learns its user part before "
            "its test; set fine-tune epochs to 0"
        )


def _text(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
