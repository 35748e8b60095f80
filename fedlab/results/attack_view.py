"""What an attack or a defence did to a run, next to its clean reference: pure functions over stored runs.

The clean reference of a run with malicious clients or a defence is a finished run with the same settings (the seed
too) but no malicious clients and no defence. Its stored test report gives the clean model's accuracy on the same
honest clients and, for a targeted attack, how often the clean model already said B where the truth was A. The
Train page's run view, Compare, the metrics table, the HTML report and the poisoning lesson all take their figures
from here. No Streamlit and no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from fedlab.config import ExperimentConfig
from fedlab.data.attacks import honest_accuracy, resolve_pair, targeted_success
from fedlab.errors import ConfigError
from fedlab.runs.store import Run, RunStore

# Row keys of the figures table.
ALL, HONEST, SUCCESS = "all clients", "honest clients", "targeted success"
_PLAIN = ExperimentConfig()  # the defaults the attack's and defence's own settings fall back to


def attacked_or_defended(config: ExperimentConfig) -> bool:
    """Whether the run has malicious clients or a defence, and so a clean reference to be measured against."""
    return config.malicious_clients > 0 or config.defense != "none"


def clean_config(config: ExperimentConfig, *, name: str = "") -> ExperimentConfig:
    """The clean reference's settings: no malicious clients and no defence, every other setting the same."""
    return config.replace(
        name=name,
        malicious_clients=0.0,
        attack=_PLAIN.attack,
        attack_classes=_PLAIN.attack_classes,
        defense="none",
        clip_norm=_PLAIN.clip_norm,
        trim_beta=_PLAIN.trim_beta,
        krum_byzantine=_PLAIN.krum_byzantine,
        bound_noise=_PLAIN.bound_noise,
    )


def is_clean_reference(candidate: ExperimentConfig, config: ExperimentConfig) -> bool:
    """Whether `candidate` is a clean run of `config`'s settings. The attack's and defence's own settings (attack
    kind, classes, clipping norm, beta, f, noise) do nothing in a clean run, so they may differ."""
    clean = candidate.malicious_clients == 0 and candidate.defense == "none"
    return clean and clean_config(candidate) == clean_config(config)


def find_clean_reference(runs: Iterable[Run], config: ExperimentConfig) -> Run | None:
    """The first of `runs` (the store lists them newest first) that is a clean reference of `config`."""
    return next((run for run in runs if is_clean_reference(run.config, config)), None)


def clean_reference(store: RunStore, config: ExperimentConfig) -> Run | None:
    """The newest finished run with test results that is a clean reference of `config`, else None."""
    return find_clean_reference((run for run in store.list_runs(statuses=("finished",)) if run.test), config)


def attack_figures(test: Mapping[str, Any], clean: Mapping[str, Any] | None) -> pd.DataFrame:
    """The run's figures beside the clean reference's on the same clients (or class pair).

    Rows (index): ALL, then HONEST when the run was attacked, then SUCCESS for a targeted attack. Columns:
    "label" (what the row measures, for display), "run" and "clean" (NaN without a clean reference or value).
    `test` and `clean` are stored test reports (TestReport.to_dict()).
    """
    clean = clean or {}
    rows = {ALL: ("test acc@1, all clients", test.get("accuracy"), clean.get("accuracy"))}
    attack = test.get("attack")
    if attack:
        malicious = set(attack["malicious_clients"])
        clean_honest = honest_accuracy(clean["per_client"], malicious)[0] if clean.get("per_client") else None
        rows[HONEST] = ("test acc@1, honest clients", attack["honest_accuracy"], clean_honest)
        if attack.get("pair"):
            a, b = attack["pair"]
            rows[SUCCESS] = (f"true {a} predicted {b}", attack.get("success"), _clean_success(clean, (a, b)))
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["label", "run", "clean"])
    return frame.astype({"run": float, "clean": float})


def _clean_success(clean: Mapping[str, Any], pair: tuple[str, str]) -> float | None:
    """How often the clean model predicted B for a true A; None when it has no confusion matrix or no such class."""
    if not clean.get("confusion") or not clean.get("class_names"):
        return None
    try:
        indices = resolve_pair(f"{pair[0]}:{pair[1]}", clean["class_names"])
    except ConfigError:  # the classes differ (another grouping): nothing to compare
        return None
    return targeted_success(clean["confusion"], indices)


def defence_totals(rounds: pd.DataFrame) -> tuple[int, int]:
    """(updates clipped, updates zeroed) over a run's stored rounds."""
    totals = [int(rounds[column].sum()) if column in rounds else 0 for column in ("clipped", "zeroed")]
    return totals[0], totals[1]
