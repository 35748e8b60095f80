"""Ablation sweeps: one run per feature left out of (or added to) a set, plus the reference run, as a named group.

A leave-one-out sweep trains the full run (the settings as given) and one run without each chosen feature; an
add-one sweep trains the base run and one run with each chosen feature added. Every run is an ordinary run of
the store; the group is kept in two tables of the same SQLite file (`sweeps`, `sweep_runs`), created here when
first needed (CREATE TABLE IF NOT EXISTS), so the store's own schema version is untouched and a fedlab that
does not know sweeps reads the runs as before. Deleting a run drops it from its sweep (ON DELETE CASCADE).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fedlab.config import KNOWN_FEATURES, ExperimentConfig
from fedlab.errors import ConfigError
from fedlab.runs.recording import Trainable, record_run
from fedlab.runs.store import RunStore, feature_label

KINDS = ("leave-one-out", "add-one")
REFERENCE = "reference"  # role of the full run (leave-one-out) or the base run (add-one)
ABLATION = "ablation"


@dataclass(frozen=True)
class PlannedRun:
    role: str  # REFERENCE or ABLATION
    feature: str | None  # the feature left out or added (None for the reference)
    config: ExperimentConfig


@dataclass(frozen=True)
class SweepPlan:
    name: str
    kind: str
    features: tuple[str, ...]  # the features swept
    runs: tuple[PlannedRun, ...]  # the reference first


@dataclass(frozen=True)
class Sweep:
    id: str
    name: str
    kind: str
    features: tuple[str, ...]
    created_at: datetime
    members: tuple[tuple[str, str, str | None], ...]  # (run id, role, feature), the reference first

    @property
    def run_ids(self) -> list[str]:
        return [run_id for run_id, _, _ in self.members]


def ablation_label(kind: str, feature: str | None) -> str:
    """ "full run" / "base run", "without venue_id" / "with venue_id"."""
    if feature is None:
        return "full run" if kind == "leave-one-out" else "base run"
    return f"{'without' if kind == 'leave-one-out' else 'with'} {feature}"


def plan_sweep(
    config: ExperimentConfig, features: Sequence[str], *, kind: str = "leave-one-out", name: str = ""
) -> SweepPlan:
    """The runs of a sweep from `config` (its features: the full set, or the base set for add-one).

    Refuses (ConfigError, one line) an unknown kind, an empty feature list, a feature that is not in the set
    (leave-one-out) or already in it (add-one), and any run whose settings cannot run, such as leaving out the
    last feature or the user feature Federated Reconstruction needs.
    """
    if kind not in KINDS:
        raise ConfigError(f"a sweep is leave-one-out or add-one, not {kind!r}")
    features = tuple(dict.fromkeys(f.strip() for f in features if f.strip()))
    if not features:
        raise ConfigError(f"a {kind} sweep needs at least one feature to {_verb(kind)}")
    unknown = [f for f in features if f not in KNOWN_FEATURES]
    if unknown:
        raise ConfigError(
            f"unknown feature {', '.join(map(repr, unknown))}; known features: {', '.join(KNOWN_FEATURES)}"
        )
    if kind == "leave-one-out":
        absent = [f for f in features if f not in config.features]
        if absent:
            raise ConfigError(f"cannot leave out {', '.join(absent)}: not among the run's features")
    else:
        present = [f for f in features if f in config.features]
        if present:
            raise ConfigError(f"cannot add {', '.join(present)}: already among the base features")
    name = name.strip() or f"{kind} sweep of {feature_label(config.features)}"
    runs = [PlannedRun(REFERENCE, None, config.replace(name=f"{name} · {ablation_label(kind, None)}"))]
    for feature in features:
        changed = (
            tuple(f for f in config.features if f != feature)
            if kind == "leave-one-out"
            else (*config.features, feature)
        )
        label = ablation_label(kind, feature)
        try:
            runs.append(PlannedRun(ABLATION, feature, config.replace(features=changed, name=f"{name} · {label}")))
        except ConfigError as exc:
            raise ConfigError(f"cannot {_verb(kind)} {feature}: {exc}") from None
    return SweepPlan(name=name, kind=kind, features=features, runs=tuple(runs))


def _verb(kind: str) -> str:
    return "leave out" if kind == "leave-one-out" else "add"


def check_finished(store: RunStore, run_id: str) -> ExperimentConfig:
    """The settings of a stored run to sweep from; refuses a run that is missing or did not finish."""
    run = store.get_run(run_id)
    if run is None:
        raise ConfigError(f"no run with id {run_id!r} in {store.path}")
    if run.status != "finished":
        raise ConfigError(f"run {run_id} is {run.status}, not finished; sweep from a run that finishes")
    return run.config.replace(name="")


# ----- the group in the store -----


def _tables(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE IF NOT EXISTS sweeps (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            features TEXT NOT NULL,        -- JSON list: the features swept
            session_id TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        )""")
    conn.execute("""
        CREATE TABLE IF NOT EXISTS sweep_runs (
            sweep_id TEXT NOT NULL REFERENCES sweeps (id) ON DELETE CASCADE,
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,     -- 0: the reference run
            role TEXT NOT NULL,
            feature TEXT,
            PRIMARY KEY (sweep_id, run_id)
        )""")


def new_sweep_id() -> str:
    return uuid.uuid4().hex[:12]


def record_sweep(
    store: RunStore, plan: SweepPlan, run_ids: Sequence[str], *, session_id: str = "", sweep_id: str = ""
) -> str:
    """Stores the group of already created runs (in the plan's order); returns the sweep's id."""
    if len(run_ids) != len(plan.runs):
        raise ValueError(f"{len(plan.runs)} planned runs but {len(run_ids)} run ids")
    sweep_id = sweep_id or new_sweep_id()
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    with store._write() as conn:  # the store's own write transaction (same package)
        _tables(conn)
        conn.execute(
            "INSERT INTO sweeps (id, name, kind, features, session_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (sweep_id, plan.name, plan.kind, json.dumps(list(plan.features)), session_id, now),
        )
        conn.executemany(
            "INSERT INTO sweep_runs (sweep_id, run_id, position, role, feature) VALUES (?, ?, ?, ?, ?)",
            [(sweep_id, run_id, i, p.role, p.feature) for i, (run_id, p) in enumerate(zip(run_ids, plan.runs))],
        )
    return sweep_id


def list_sweeps(store: RunStore) -> list[Sweep]:
    """Every sweep with a run left, newest first (an empty list for a store without sweeps)."""
    with store._read() as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sweeps'").fetchone() is None:
            return []
        rows = conn.execute("SELECT * FROM sweeps ORDER BY created_at DESC").fetchall()
        members = conn.execute("SELECT * FROM sweep_runs ORDER BY sweep_id, position").fetchall()
    by_sweep: dict[str, list] = {}
    for m in members:
        by_sweep.setdefault(m["sweep_id"], []).append((m["run_id"], m["role"], m["feature"]))
    return [
        Sweep(
            id=row["id"],
            name=row["name"],
            kind=row["kind"],
            features=tuple(json.loads(row["features"])),
            created_at=datetime.fromisoformat(row["created_at"]),
            members=tuple(by_sweep.get(row["id"], ())),
        )
        for row in rows
        if by_sweep.get(row["id"])
    ]


def get_sweep(store: RunStore, sweep_id: str) -> Sweep | None:
    return next((s for s in list_sweeps(store) if s.id == sweep_id), None)


# ----- running one (the CLI; the dashboard queues the runs on its job manager) -----


def create_runs(store: RunStore, plan: SweepPlan, *, session_id: str = "") -> tuple[str, list[str]]:
    """Creates the plan's runs (queued) and their group; returns (sweep id, run ids)."""
    run_ids = [store.create_run(p.config, session_id=session_id, name=p.config.name) for p in plan.runs]
    return record_sweep(store, plan, run_ids, session_id=session_id), run_ids


def train_sweep(
    store: RunStore,
    plan: SweepPlan,
    run_ids: Sequence[str],
    factory: Callable[[ExperimentConfig], Trainable],
    *,
    on_start: Callable[[PlannedRun], None] | None = None,
    on_end: Callable[[PlannedRun, str], None] | None = None,
    save_model: Callable[[str], Callable[[Trainable, dict], str | None]] | None = None,
) -> list[str]:
    """Trains the created runs one after the other; returns their end statuses.

    A run that fails is recorded as failed and the sweep goes on with the next one."""
    statuses = []
    for run_id, planned in zip(run_ids, plan.runs):
        if on_start is not None:
            on_start(planned)
        store.set_status(run_id, "running")
        experiment = factory(planned.config)
        try:
            status = record_run(
                store, run_id, experiment, save_model=save_model(run_id) if save_model is not None else None
            )
        except KeyboardInterrupt:
            for rest in run_ids[len(statuses) + 1 :]:
                store.set_status(rest, "stopped")
            raise
        except Exception:  # recorded as failed with its message by record_run
            status = "failed"
        finally:
            experiment.close()
        statuses.append(status)
        if on_end is not None:
            on_end(planned, status)
    return statuses
