"""The final-metrics table of one or more runs: test metrics beside the baselines scored on the same targets,
as display text (one column per run). Shared by the dashboard and the HTML report."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from fedlab.baselines import BASELINE_LABELS
from fedlab.records import PERSONALIZED_ROW, communication_totals, personalized_cell

MISSING = "—"
GAIN_ROW = "acc@1 minus best baseline"
SENT_ROW = "megabytes sent (down / up)"
SAVED_ROW = "megabytes compression saved (up)"


def metrics_table(
    tests: Mapping[str, Mapping | None], baselines: Mapping[str, Mapping | None], rounds: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """Rows of metrics, one column per label (the keys of `tests`). A value that is missing or NaN shows as
    "—"; the fine-tuning row is there when any run fine-tuned ("—" for the others)."""
    any_tuned = any((test or {}).get("personalized") for test in tests.values())
    sent = {label: communication_totals(rounds.get(label, pd.DataFrame()).to_dict(orient="records")) for label in tests}
    any_saved = any(totals["mb_saved"] for totals in sent.values())
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
        cells.update({f"baseline · {name}": pct(base.get(key)) for key, name in BASELINE_LABELS.items()})
        columns[label] = cells
    return pd.DataFrame(columns, dtype=object)


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
