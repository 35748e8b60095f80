"""An ablation sweep as one table: each run's acc@1, loss and megabytes against the reference run's.

Pure functions of stored runs (fedlab.runs.sweeps keeps the group). The reference is the full run of a
leave-one-out sweep, or the base run of an add-one sweep; deltas are the ablation minus the reference, so a
negative acc@1 delta in a leave-one-out sweep is what the left-out feature was worth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from fedlab.records import communication_totals
from fedlab.runs.store import Run, RunStore
from fedlab.runs.sweeps import REFERENCE, Sweep, ablation_label

COLUMNS = [
    "run",
    "feature",
    "status",
    "accuracy",
    "accuracy_delta",
    "loss",
    "loss_delta",
    "megabytes",
    "megabytes_delta",
    "seconds",
]


def member_row(sweep: Sweep, run_id: str, role: str, feature: str | None, run: Run | None, rounds) -> dict:
    """One run of the sweep as a plain row (a deleted run keeps its place, as "deleted")."""
    test = (run.test or {}) if run is not None else {}
    sent = communication_totals(rounds.to_dict(orient="records")) if rounds is not None and len(rounds) else None
    seconds = None
    if run is not None and run.started_at is not None and run.finished_at is not None:
        seconds = (run.finished_at - run.started_at).total_seconds()
    return {
        "run": ablation_label(sweep.kind, None if role == REFERENCE else feature),
        "feature": feature or "",
        "status": run.status if run is not None else "deleted",
        "accuracy": test.get("accuracy"),
        "loss": test.get("loss"),
        "megabytes": sent["mb_down"] + sent["mb_up"] if sent else None,
        "seconds": seconds,
        "run_id": run_id,
    }


def sweep_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """The rows (the reference first) with their deltas against the reference; a missing value stays None."""
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.DataFrame([dict(r) for r in rows])
    for column in ("accuracy", "loss", "megabytes", "seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    reference = frame.iloc[0]
    for column in ("accuracy", "loss", "megabytes"):
        frame[f"{column}_delta"] = frame[column] - reference[column]
    return frame[[c for c in COLUMNS if c in frame] + [c for c in frame if c not in COLUMNS]]


def total_seconds(runs: Sequence[Run | None]) -> float | None:
    """Wall time of the sweep: from its first run's start to its last run's end; None until one has ended."""
    started = [r.started_at for r in runs if r is not None and r.started_at is not None]
    ended = [r.finished_at for r in runs if r is not None and r.finished_at is not None]
    if not started or not ended:
        return None
    return max((max(ended) - min(started)).total_seconds(), 0.0)


def sweep_text(table: pd.DataFrame, kind: str) -> str:
    """One sentence on the ablation that moved acc@1 the most, read from the table."""
    done = table.iloc[1:].dropna(subset=["accuracy_delta"])
    if table.empty or done.empty or pd.isna(table.iloc[0]["accuracy"]):
        return "The sweep's runs have no test results yet."
    if kind == "leave-one-out":
        worst = done.sort_values(["accuracy_delta", "feature"]).iloc[0]
        line = (
            f"Leaving out **{worst['feature']}** moves acc@1 the most: {worst['accuracy_delta'] * 100:+.1f} pts "
            "against the full run."
        )
        free = done[done["accuracy_delta"] >= 0]["feature"].tolist()
        if free:
            line += f" Without {', '.join(free)} the model does at least as well: the rest carry what it gave."
        return line
    best = done.sort_values(["accuracy_delta", "feature"], ascending=[False, True]).iloc[0]
    return (
        f"Adding **{best['feature']}** helps the most: {best['accuracy_delta'] * 100:+.1f} pts of acc@1 over the "
        "base run."
    )


def stored_sweep(store: RunStore, sweep: Sweep) -> tuple[pd.DataFrame, dict | None, float | None]:
    """(the sweep's table, the reference run's baselines, the sweep's total seconds) from the store."""
    runs = {run_id: store.get_run(run_id) for run_id in sweep.run_ids}
    rows = [
        member_row(sweep, run_id, role, feature, runs[run_id], store.rounds(run_id) if runs[run_id] else None)
        for run_id, role, feature in sweep.members
    ]
    reference = runs.get(sweep.run_ids[0]) if sweep.run_ids else None
    return sweep_table(rows), (reference.baselines if reference else None), total_seconds(list(runs.values()))


def sweep_lines(table: pd.DataFrame, seconds: float | None) -> list[str]:
    """The CLI's table: one line per run (acc@1, loss and MB with their deltas against the reference)."""
    lines = [f"{'run':<28} {'status':<9} {'acc@1':>7} {'Δ pts':>7} {'loss':>7} {'Δ loss':>7} {'MB':>8} {'Δ MB':>8}"]
    for r in table.itertuples(index=False):
        lines.append(
            f"{r.run:<28} {r.status:<9} {_cell(r.accuracy, 100, '.2f')} {_cell(r.accuracy_delta, 100, '+.2f')} "
            f"{_cell(r.loss, 1, '.4f')} {_cell(r.loss_delta, 1, '+.4f')} {_cell(r.megabytes, 1, '.2f', 8)} "
            f"{_cell(r.megabytes_delta, 1, '+.2f', 8)}"
        )
    lines.append(f"total time {seconds:.1f} s" if seconds is not None else "total time: not ended")
    return lines


def _cell(value, scale: float, spec: str, width: int = 7) -> str:
    return f"{value * scale:{spec}}".rjust(width) if value is not None and value == value else "-".rjust(width)
