"""The SQLite run store: runs and their per-round metrics, written as they happen.

Every operation opens its own short-lived connection, so the store is safe to share between the
Streamlit script threads, the training thread and other processes on the same machine. WAL mode
lets readers see each committed round at once while a writer is busy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from fedlab.config import PRESETS, ExperimentConfig
from fedlab.errors import FedlabError
from fedlab.records import RoundRecord, TestReport

log = logging.getLogger(__name__)

# The store of the project folder, whatever the working directory: the dashboard, `fedlab run`, `fedlab demo`,
# `fedlab runs` and `fedlab report` all use it unless FEDLAB_DB names another (see default_path).
PROJECT_DB_PATH = Path(__file__).resolve().parents[2] / "runs" / "fedlab.db"
SCHEMA_VERSION = 3

STATUSES = ("queued", "running", "testing", "finished", "stopped", "failed", "interrupted")
STOPPABLE_STATUSES = ("queued", "running")
ACTIVE_STATUSES = (*STOPPABLE_STATUSES, "testing")  # "testing": rounds done, the kept model is being tested
TERMINAL_STATUSES = ("finished", "stopped", "failed", "interrupted")

ROUND_COLUMNS = tuple(f.name for f in dataclasses.fields(RoundRecord))
_ROUND_DTYPES = {
    "round": "int64",
    "train_loss": "float64",
    "train_accuracy": "float64",
    "val_loss": "float64",
    "val_accuracy": "float64",
    "clients": "int64",
    "seconds": "float64",
    "is_best": "bool",
    "bytes_down": "int64",
    "bytes_up": "int64",
    "bytes_saved": "int64",
    "clipped": "int64",
    "zeroed": "int64",
}

# Tells this process apart from an earlier one that had the same pid (containers restart at low pids).
_PROCESS_TOKEN = uuid.uuid4().hex
_INTERRUPTED_MESSAGE = "the process running this run ended before it finished"
_START_TOLERANCE_S = 0.1  # process start times are kept in clock ticks; a reused pid started later


class StoreError(FedlabError):
    """The run store file cannot be used (not a database, or written by a newer fedlab)."""


@dataclass(frozen=True)
class Run:
    """One run as stored. `test` is TestReport.to_dict(); times are timezone-aware UTC."""

    id: str
    name: str
    status: str
    session_id: str
    config: ExperimentConfig
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    test: dict | None
    baselines: dict | None
    timing: dict = field(default_factory=dict)
    model_path: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def can_stop(self) -> bool:
        """Queued or training; once testing, its rounds are done and it finishes by itself."""
        return self.status in STOPPABLE_STATUSES


@dataclass(frozen=True)
class RoundSummary:
    """What the run table shows of a run's rounds."""

    rounds: int
    best_val_accuracy: float | None


class RunStore:
    """Runs and rounds in one SQLite file; see the module docstring for the concurrency model."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout_ms: int = 10_000):
        self.path = Path(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._initialise()

    @property
    def folder(self) -> Path:
        """The folder holding the database; model files inside it are deleted with their run."""
        return self.path.parent

    # ----- runs -----

    def create_run(self, config: ExperimentConfig, *, session_id: str = "", name: str = "") -> str:
        run_id = uuid.uuid4().hex[:12]
        with self._write() as conn:
            conn.execute(
                "INSERT INTO runs (id, name, status, session_id, config, created_at, timing, extra, owner)"
                " VALUES (?, ?, 'queued', ?, ?, ?, '{}', '{}', ?)",
                (run_id, name.strip() or default_name(config), session_id, _dumps(config.to_dict()), _now(), _owner()),
            )
        return run_id

    def set_status(self, run_id: str, status: str, *, error: str | None = None) -> None:
        _check_status(status, STATUSES)
        with self._write() as conn:
            self._require(conn, run_id)
            if status == "running":
                # (Re)starting: this process owns it now, and an earlier finish no longer applies.
                conn.execute(
                    "UPDATE runs SET status = ?, started_at = ?, finished_at = NULL, owner = ?, error = ? WHERE id = ?",
                    (status, _now(), _owner(), error, run_id),
                )
            elif status in ("queued", "testing"):
                conn.execute("UPDATE runs SET status = ?, error = ? WHERE id = ?", (status, error, run_id))
            else:
                conn.execute(
                    "UPDATE runs SET status = ?, finished_at = ?, error = COALESCE(?, error) WHERE id = ?",
                    (status, _now(), error, run_id),
                )

    def add_round(self, run_id: str, record: RoundRecord) -> None:
        values = record.to_dict()
        placeholders = ", ".join("?" for _ in ROUND_COLUMNS)
        with self._write() as conn:
            self._require(conn, run_id)
            # REPLACE keeps a retried round idempotent instead of failing the run.
            conn.execute(
                f"INSERT OR REPLACE INTO rounds (run_id, {', '.join(ROUND_COLUMNS)}) VALUES (?, {placeholders})",
                (run_id, *(values[c] for c in ROUND_COLUMNS)),
            )

    def finish(
        self,
        run_id: str,
        *,
        status: str,
        test: TestReport | None,
        baselines: dict[str, float] | None,
        timing: dict[str, float],
        model_path: str | None,
        extra: dict | None = None,
        error: str | None = None,
    ) -> None:
        _check_status(status, TERMINAL_STATUSES)
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, test = ?, baselines = ?, timing = ?,"
                " model_path = ?, extra = ?, error = ? WHERE id = ?",
                (
                    status,
                    _now(),
                    _dumps(test.to_dict()) if test is not None else None,
                    _dumps(baselines) if baselines is not None else None,
                    _dumps(dict(timing or {})),
                    str(model_path) if model_path else None,
                    _dumps(dict(extra or {})),
                    error,
                    run_id,
                ),
            )

    def get_run(self, run_id: str) -> Run | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run_from_row(row) if row is not None else None

    def list_runs(self, *, session_id: str | None = None, statuses: tuple[str, ...] | None = None) -> list[Run]:
        """Newest first. Rows whose stored config no longer validates are skipped (and logged)."""
        where, params = [], []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if statuses is not None:
            for status in statuses:
                _check_status(status, STATUSES)
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(statuses)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY created_at DESC, rowid DESC", params).fetchall()
        return [run for run in map(_readable_run, rows) if run is not None]

    def matching_run(self, config: ExperimentConfig, *, statuses: tuple[str, ...] = ("finished",)) -> Run | None:
        """The newest run in one of `statuses` whose settings equal `config`'s, the name aside (to reuse it)."""
        wanted = config.replace(name="")
        return next((run for run in self.list_runs(statuses=statuses) if run.config.replace(name="") == wanted), None)

    def rounds(self, run_id: str) -> pd.DataFrame:
        with self._read() as conn:
            self._require(conn, run_id)
            rows = conn.execute(
                f"SELECT {', '.join(ROUND_COLUMNS)} FROM rounds WHERE run_id = ? ORDER BY round", (run_id,)
            ).fetchall()
        return _rounds_frame([tuple(row) for row in rows])

    def round_summaries(self) -> dict[str, RoundSummary]:
        """Run id -> its round count and best validation accuracy, for every run with rounds, in one query."""
        with self._read() as conn:
            rows = conn.execute("SELECT run_id, COUNT(*), MAX(val_accuracy) FROM rounds GROUP BY run_id").fetchall()
        return {run_id: RoundSummary(rounds=count, best_val_accuracy=best) for run_id, count, best in rows}

    def rename(self, run_id: str, name: str) -> None:
        name = name.strip()
        if not name:
            raise ValueError("a run name cannot be empty")
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id))

    def delete(self, run_id: str) -> None:
        """Deletes the run, its rounds, the reference to it, and its model file when inside the store's folder."""
        with self._write() as conn:
            model_path = self._require(conn, run_id)["model_path"]
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))  # its rounds go with it (ON DELETE CASCADE)
            conn.execute("DELETE FROM meta WHERE key = 'reference' AND value = ?", (run_id,))
        if model_path:
            self._delete_model_file(Path(model_path))

    # ----- the pinned reference run -----

    def set_reference(self, run_id: str | None) -> None:
        with self._write() as conn:
            if run_id is None:
                conn.execute("DELETE FROM meta WHERE key = 'reference'")
                return
            self._require(conn, run_id)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('reference', ?)", (run_id,))

    def reference(self) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'reference'").fetchone()
        return row["value"] if row is not None else None

    # ----- recovery -----

    def mark_interrupted(self) -> int:
        """Flips runs left queued, running or testing by a process that no longer exists to "interrupted".

        Runs owned by a live process (this one, or a `fedlab run` in a terminal) are left alone. Cheap when
        nothing is orphaned (one read, no write lock), so pages may call it on every visit.
        """
        with self._read() as conn:
            if not _orphans(conn):
                return 0
        with self._write() as conn:
            dead = _orphans(conn)  # again under the write lock: another process may have flipped them
            now = _now()
            conn.executemany(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, error = COALESCE(error, ?) WHERE id = ?",
                [(now, _INTERRUPTED_MESSAGE, run_id) for run_id in dead],
            )
        return len(dead)

    # ----- export -----

    def export_json(self, run_id: str) -> str:
        """The CLI's result keys (config, rounds, test, baselines, timing, data) plus what the store knows."""
        run = self._get_existing(run_id)
        frame = self.rounds(run_id)
        payload = {
            "config": run.config.to_dict(),
            "rounds": [_round_dict(row) for row in frame.to_dict(orient="records")],
            "test": run.test,
            "baselines": run.baselines,
            "timing": run.timing,
            "data": {k: v for k, v in run.extra.items() if k != "model_error"},  # the CLI's summary key
            "id": run.id,
            "name": run.name,
            "status": run.status,
            "error": run.error,
            "created_at": _iso(run.created_at),
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "model_path": run.model_path,
            "extra": run.extra,
        }
        return json.dumps(payload, indent=2)

    def export_rounds_csv(self, run_id: str) -> str:
        return self.rounds(run_id).to_csv(index=False)

    # ----- internals -----

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE for writes), so a
        # writer waits on busy_timeout up front instead of failing when upgrading a read lock.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        # SQLite leaves foreign keys off per connection; on, deleting a run deletes its rounds (ON DELETE CASCADE).
        conn.execute("PRAGMA foreign_keys = ON")
        # NORMAL in WAL survives a killed process (not a power cut) and keeps each round's commit cheap.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._open()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._open()
        try:
            yield conn
        finally:
            conn.close()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the run store {self.path}: {exc}") from exc

    def _initialise(self) -> None:
        try:
            conn = self._connect()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the run store {self.path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("run store %s could not switch to WAL mode (journal mode %s)", self.path, mode)
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Read the version inside the write lock so two processes opening a new file don't both migrate.
                self._migrate(conn, conn.execute("PRAGMA user_version").fetchone()[0])
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable fedlab run store: {exc}") from exc
        finally:
            conn.close()

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the run store {self.path} was written by a newer fedlab (schema {version},"
                f" this version reads up to {SCHEMA_VERSION}); upgrade fedlab or choose another FEDLAB_DB"
            )
        for target, migration in enumerate(_MIGRATIONS, start=1):
            if version < target:
                migration(conn)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _require(self, conn: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run with id {run_id!r} in {self.path}")
        return row

    def _get_existing(self, run_id: str) -> Run:
        run = self.get_run(run_id)
        if run is None:
            raise KeyError(f"no run with id {run_id!r} in {self.path}")
        return run

    def _delete_model_file(self, model_path: Path) -> None:
        # Only files the store owns: a model someone saved elsewhere is theirs to keep.
        resolved = model_path if model_path.is_absolute() else Path.cwd() / model_path
        try:
            resolved = resolved.resolve()
            if resolved.is_relative_to(self.folder.resolve()) and resolved.is_file():
                resolved.unlink()
        except OSError as exc:
            log.warning("could not delete model file %s: %s", model_path, exc)


def default_path() -> Path:
    """The one rule for every command and the dashboard: FEDLAB_DB when set, else PROJECT_DB_PATH."""
    return Path(os.environ.get("FEDLAB_DB") or PROJECT_DB_PATH).expanduser().resolve()


def default_name(config: ExperimentConfig) -> str:
    """A readable run name such as "central · federated · N17"."""
    if config.name.strip():
        return config.name.strip()
    return f"{feature_label(config.features)} · {config.mode} · N{config.data.n}"


def feature_label(features: tuple[str, ...]) -> str:
    """The preset name when the features are exactly a preset's (in any order), else "custom (k features)"."""
    for preset, preset_features in PRESETS.items():
        if set(features) == set(preset_features) and len(features) == len(preset_features):
            return preset
    return f"custom ({len(features)} feature{'s' if len(features) != 1 else ''})"


# ----- schema -----


def _create_v1(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            session_id TEXT NOT NULL DEFAULT '',
            config TEXT NOT NULL,          -- JSON: ExperimentConfig.to_dict()
            created_at TEXT NOT NULL,      -- ISO 8601, UTC
            started_at TEXT,
            finished_at TEXT,
            error TEXT,
            test TEXT,                     -- JSON: TestReport.to_dict()
            baselines TEXT,                -- JSON
            timing TEXT NOT NULL DEFAULT '{}',
            model_path TEXT,
            extra TEXT NOT NULL DEFAULT '{}',
            owner TEXT                     -- JSON: host, pid, token of the process that queued/runs it
        )""")
    conn.execute("CREATE INDEX runs_by_session ON runs (session_id, created_at)")
    conn.execute("CREATE INDEX runs_by_status ON runs (status)")
    conn.execute("""
        CREATE TABLE rounds (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            round INTEGER NOT NULL,
            train_loss REAL,
            train_accuracy REAL,
            val_loss REAL,
            val_accuracy REAL,
            clients INTEGER NOT NULL,
            seconds REAL,
            is_best INTEGER NOT NULL,
            PRIMARY KEY (run_id, round)
        )""")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")


def _add_round_bytes_v2(conn: sqlite3.Connection) -> None:
    # Rounds stored before bytes were measured read as 0 bytes (as centralized rounds do).
    conn.execute("ALTER TABLE rounds ADD COLUMN bytes_down INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE rounds ADD COLUMN bytes_up INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE rounds ADD COLUMN bytes_saved INTEGER NOT NULL DEFAULT 0")


def _add_defense_counts_v3(conn: sqlite3.Connection) -> None:
    # Rounds stored before defences existed clipped and zeroed nothing.
    conn.execute("ALTER TABLE rounds ADD COLUMN clipped INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE rounds ADD COLUMN zeroed INTEGER NOT NULL DEFAULT 0")


# Index i migrates a store from schema version i to i + 1.
_MIGRATIONS = (_create_v1, _add_round_bytes_v2, _add_defense_counts_v3)


# ----- row conversion -----


def _run_from_row(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        session_id=row["session_id"],
        config=ExperimentConfig.from_dict(json.loads(row["config"])),
        created_at=_parse_time(row["created_at"]),
        started_at=_parse_time(row["started_at"]),
        finished_at=_parse_time(row["finished_at"]),
        error=row["error"],
        test=_loads(row["test"]),
        baselines=_loads(row["baselines"]),
        timing=_loads(row["timing"]) or {},
        model_path=row["model_path"],
        extra=_loads(row["extra"]) or {},
    )


def _readable_run(row: sqlite3.Row) -> Run | None:
    # One unreadable row (say, a config a later version rejects) must not hide the whole history.
    try:
        return _run_from_row(row)
    except (FedlabError, ValueError, TypeError) as exc:
        log.warning("skipping run %s: cannot read it (%s)", row["id"], exc)
        return None


def _rounds_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(ROUND_COLUMNS))
    # SQLite keeps NaN as NULL; float columns turn those back into NaN.
    return frame.astype(_ROUND_DTYPES)


def _round_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A rounds-frame row as plain JSON values (numpy scalars -> Python, NaN -> None)."""
    out = {}
    for column in ROUND_COLUMNS:
        value = row[column]
        value = value.item() if hasattr(value, "item") else value
        out[column] = None if isinstance(value, float) and value != value else value
    return out


# ----- small helpers -----


def _check_status(status: str, allowed: tuple[str, ...]) -> None:
    if status not in allowed:
        raise ValueError(f"status must be one of {', '.join(allowed)}, not {status!r}")


def _rollback(conn: sqlite3.Connection) -> None:
    # Some errors (disk full, I/O) already rolled back; a second ROLLBACK would hide the real error.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _now() -> str:
    # Fixed width (always microseconds) so text order is time order in ORDER BY.
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _dumps(value: Any) -> str:
    return json.dumps(value)


def _loads(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


def _owner() -> str:
    # The start time tells this process apart from a later one that reuses its pid.
    return _dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": _PROCESS_TOKEN,
            "started": psutil.Process().create_time(),
        }
    )


def _orphans(conn: sqlite3.Connection) -> list[str]:
    """Ids of the active runs whose owner process is gone."""
    rows = conn.execute(
        f"SELECT id, owner FROM runs WHERE status IN ({', '.join('?' for _ in ACTIVE_STATUSES)})", ACTIVE_STATUSES
    ).fetchall()
    return [row["id"] for row in rows if not _owner_alive(row["owner"])]


def _owner_alive(owner_text: str | None) -> bool:
    """Whether the process that owns a queued/running run still exists."""
    try:
        owner = json.loads(owner_text) if owner_text else {}
    except ValueError:
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or owner.get("host") != socket.gethostname():
        # WAL needs every user on one machine, so another host means an earlier machine or container.
        return False
    if pid == os.getpid():
        return owner.get("token") == _PROCESS_TOKEN
    return _process_alive(pid, owner.get("started"))


def _process_alive(pid: int, started: float | None) -> bool:
    try:
        process = psutil.Process(pid)
        # A killed child its parent has not reaped yet still exists, as a zombie.
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < _START_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # exists, owned by another user
