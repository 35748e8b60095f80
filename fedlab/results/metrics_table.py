"""The final-metrics table of one or more runs: test metrics beside the baselines scored on the same targets,
as display text (one column per run). Shared by the dashboard and the HTML report.

Runs with malicious clients or a defence add rows: the malicious clients, the honest clients' accuracy, the
targeted attack's success, the updates the defence clipped and zeroed, and the clean reference's figures on the
same clients (fedlab.results.attack_view) when it is stored."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from fedlab.config import ExperimentConfig
from fedlab.records import PERSONALIZED_ROW, communication_totals, personalized_cell
from fedlab.results import attack_view
from fedlab.results.baselines import BASELINE_LABELS

MISSING = "—"
GAIN_ROW = "acc@1 minus best baseline"
SENT_ROW = "megabytes sent (down / up)"
SAVED_ROW = "megabytes compression saved (up)"
MALICIOUS_ROW = "malicious clients"
HONEST_ROW = "acc@1 of the honest clients"
SUCCESS_ROW = "targeted attack: true A predicted B"
DEFENCE_ROW = "updates clipped / zeroed by the defence (total)"
CLEAN_ROW = "clean reference: acc@1"
CLEAN_HONEST_ROW = "clean reference: acc@1 of the same honest clients"
CLEAN_SUCCESS_ROW = "clean reference: true A predicted B"
NOT_STORED = "not stored"


def metrics_table(
    tests: Mapping[str, Mapping | None],
    baselines: Mapping[str, Mapping | None],
    rounds: Mapping[str, pd.DataFrame],
    *,
    configs: Mapping[str, ExperimentConfig] | None = None,
    clean: Mapping[str, Mapping | None] | None = None,
) -> pd.DataFrame:
    """Rows of metrics, one column per label (the keys of `tests`). A value that is missing or NaN shows as
    "—"; the fine-tuning row is there when any run fine-tuned ("—" for the others).

    `configs` (label -> settings) tells which runs had a defence; `clean` (label -> the stored test report of the
    run's clean reference, None when none is stored) adds the clean reference's rows."""
    any_tuned = any((test or {}).get("personalized") for test in tests.values())
    sent = {label: communication_totals(rounds.get(label, pd.DataFrame()).to_dict(orient="records")) for label in tests}
    any_saved = any(totals["mb_saved"] for totals in sent.values())
    attacked = attack_rows(tests, rounds, configs or {}, clean or {})
    columns = {}
    for label, test in tests.items():
        test, base = test or {}, baselines.get(label) or {}
        history = rounds.get(label, pd.DataFrame())
        accuracy, best_base = _number(test.get("accuracy")), _best(base)
        gain = None if accuracy is None or best_base is None else accuracy - best_base
        cells = {
            "acc@1 (test accuracy)": pct(accuracy),
            "acc@5 (top-5 accuracy)": pct(test.get("top5_accuracy")),
            "MRR (mean reciprocal rank)": num(test.get("mrr")),
            "test loss (nats)": num(test.get("loss")),
            "best validation accuracy": pct(history["val_accuracy"].max() if len(history) else None),
            "rounds trained": str(len(history)),
            "test targets scored": whole(test.get("examples")),
            GAIN_ROW: MISSING if gain is None else f"{gain * 100:+.1f} points",
            SENT_ROW: _megabytes(sent[label]),
        }
        if any_saved:
            cells[SAVED_ROW] = f"{sent[label]['mb_saved']:,.3f}"
        if any_tuned:
            cells[PERSONALIZED_ROW] = personalized_cell(test)
        cells.update(attacked.get(label, {}))
        cells.update({f"baseline · {name}": pct(base.get(key)) for key, name in BASELINE_LABELS.items()})
        columns[label] = cells
    return pd.DataFrame(columns, dtype=object)


def attack_rows(
    tests: Mapping[str, Mapping | None],
    rounds: Mapping[str, pd.DataFrame],
    configs: Mapping[str, ExperimentConfig],
    clean: Mapping[str, Mapping | None],
) -> dict[str, dict[str, str]]:
    """Label -> the attack and defence rows of its column; every column has the same rows, and there are none when
    no run was attacked or defended. A run without a config counts as defended when its rounds counted any."""
    tests = {label: test or {} for label, test in tests.items()}
    totals = {label: attack_view.defence_totals(rounds.get(label, pd.DataFrame())) for label in tests}
    defences = {
        label: configs[label].defense if label in configs else ("a defence" if any(totals[label]) else "none")
        for label in tests
    }
    if not any(test.get("attack") for test in tests.values()) and set(defences.values()) == {"none"}:
        return {}
    shown = {
        "attacked": any(test.get("attack") for test in tests.values()),
        "targeted": any((test.get("attack") or {}).get("pair") for test in tests.values()),
    }
    return {
        label: _attack_cells(test, totals[label], defences[label], clean.get(label), **shown)
        for label, test in tests.items()
    }


def _attack_cells(
    test: Mapping,
    totals: tuple[int, int],
    defence: str,
    clean: Mapping | None,
    *,
    attacked: bool,
    targeted: bool,
) -> dict[str, str]:
    """One run's attack and defence rows; `attacked` and `targeted` say whether any run of the table was."""
    attack = test.get("attack") or {}
    figures = attack_view.attack_figures(test, clean)
    needed = bool(attack) or defence != "none"

    def reference(row: str) -> str:
        if not needed or row not in figures.index:
            return MISSING
        return NOT_STORED if clean is None else pct(figures.loc[row, "clean"])

    cells = {}
    if attacked:
        cells[MALICIOUS_ROW] = f"{len(attack['malicious_clients'])} ({attack['kind']})" if attack else "none"
        cells[HONEST_ROW] = pct(attack.get("honest_accuracy")) if attack else MISSING
    if targeted:
        pair = attack.get("pair")
        cells[SUCCESS_ROW] = f"{pct(attack.get('success'))} ({pair[0]} → {pair[1]})" if pair else MISSING
    cells[DEFENCE_ROW] = "no defence" if defence == "none" else f"{totals[0]:,} / {totals[1]:,} ({defence})"
    cells[CLEAN_ROW] = reference(attack_view.ALL)
    if attacked:
        cells[CLEAN_HONEST_ROW] = reference(attack_view.HONEST)
    if targeted:
        cells[CLEAN_SUCCESS_ROW] = reference(attack_view.SUCCESS)
    return cells


def _megabytes(totals: Mapping[str, float]) -> str:
    """Down / up megabytes of a run; "—" when it sent nothing (centralized, or stored before bytes were counted)."""
    if not totals["mb_down"] and not totals["mb_up"]:
        return MISSING
    return f"{totals['mb_down']:,.3f} / {totals['mb_up']:,.3f}"


def best_baseline(baselines: Mapping | None) -> float | None:
    """The highest baseline accuracy, ignoring missing and NaN values."""
    return _best(baselines or {})


def pct(value: Any) -> str:
    value = _number(value)
    return MISSING if value is None else f"{value:.1%}"


def num(value: Any) -> str:
    value = _number(value)
    return MISSING if value is None else f"{value:.3f}"


def whole(value: Any) -> str:
    value = _number(value)
    return MISSING if value is None else f"{int(value):,}"


def _best(baselines: Mapping) -> float | None:
    values = [v for v in map(_number, baselines.values()) if v is not None]
    return max(values, default=None)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
