"""The SQLite run store: round trips, visibility across handles, recovery, concurrency."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from fedlab.config import ALL_FEATURES, DataConfig, ExperimentConfig
from fedlab.records import RoundRecord
from fedlab.records import TestReport as Report  # not collected by pytest as a test class
from fedlab.runs.store import (
    PROJECT_DB_PATH,
    ROUND_COLUMNS,
    SCHEMA_VERSION,
    RunStore,
    StoreError,
    default_name,
    default_path,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_config(**changes) -> ExperimentConfig:
    # Built directly: ExperimentConfig.replace(data=...) would treat "data" as DataConfig.data (the file path).
    return ExperimentConfig(**{"rounds": 3, "gru_units": 8, **changes})


def make_round(number: int, **changes) -> RoundRecord:
    values = dict(
        round=number,
        train_loss=2.0 / number,
        train_accuracy=0.1 * number,
        val_loss=2.5 / number,
        val_accuracy=0.09 * number,
        clients=5,
        seconds=0.25,
        is_best=number % 2 == 1,
    )
    values.update(changes)
    return RoundRecord(**values)


def make_test_report() -> Report:
    return Report(
        accuracy=0.4,
        top5_accuracy=0.9,
        mrr=0.55,
        loss=1.7,
        examples=120,
        per_client={"7": {"accuracy": 0.5, "examples": 10, "checkins": 40}},
        per_class={"Food": {"precision": 0.6, "recall": 0.5, "support": 30}},
        confusion=[[3, 1], [2, 4]],
        class_names=["Food", "Shop"],
    )


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs" / "fedlab.db")


def test_new_store_creates_parent_folder_and_schema_version(tmp_path: Path):
    path = tmp_path / "deep" / "er" / "fedlab.db"
    RunStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_default_path_is_fedlab_db_else_the_project_folders_whatever_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEDLAB_DB", raising=False)
    assert default_path() == PROJECT_DB_PATH == REPO_ROOT / "runs" / "fedlab.db"
    monkeypatch.setenv("FEDLAB_DB", "/data/other.db")
    assert default_path() == Path("/data/other.db")
    monkeypatch.setenv("FEDLAB_DB", "mine.db")
    assert default_path() == tmp_path / "mine.db"


def test_store_uses_wal_mode(store: RunStore):
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_written_by_newer_version_is_refused(tmp_path: Path):
    path = tmp_path / "fedlab.db"
    RunStore(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer fedlab"):
        RunStore(path)


def test_file_that_is_not_a_database_is_refused(tmp_path: Path):
    path = tmp_path / "fedlab.db"
    path.write_bytes(b"this is not sqlite, just some text that is long enough to be a header" * 10)
    with pytest.raises(StoreError):
        RunStore(path)


def test_reopening_existing_store_keeps_runs(tmp_path: Path):
    path = tmp_path / "fedlab.db"
    run_id = RunStore(path).create_run(make_config())
    assert RunStore(path).get_run(run_id) is not None


def test_round_trip_of_config_rounds_test_and_baselines(store: RunStore):
    config = make_config(
        features=ALL_FEATURES,
        mode="federated",
        dp_clip=1.0,
        dp_noise=0.5,
        data=DataConfig(grouping="root", top_users=None, n=9, stride=3),
    )
    run_id = store.create_run(config, session_id="s1")
    for number in (1, 2, 3):
        store.add_round(run_id, make_round(number))
    store.finish(
        run_id,
        status="finished",
        test=make_test_report(),
        baselines={"majority": 0.2},
        timing={"train_seconds": 1.5},
        model_path=None,
        extra={"clients": 12},
    )

    run = store.get_run(run_id)
    assert run.config == config
    assert run.status == "finished"
    assert run.session_id == "s1"
    assert run.test == make_test_report().to_dict()
    assert run.baselines == {"majority": 0.2}
    assert run.timing == {"train_seconds": 1.5}
    assert run.extra == {"clients": 12}
    frame = store.rounds(run_id)
    assert [RoundRecord(**row) for row in frame.to_dict(orient="records")] == [make_round(n) for n in (1, 2, 3)]


def test_rounds_frame_has_exactly_the_record_fields_ordered_by_round(store: RunStore):
    run_id = store.create_run(make_config())
    for number in (3, 1, 2):
        store.add_round(run_id, make_round(number))
    frame = store.rounds(run_id)
    assert tuple(frame.columns) == ROUND_COLUMNS
    assert frame["round"].tolist() == [1, 2, 3]
    assert frame["is_best"].dtype == bool


def test_rounds_of_run_without_rounds_is_empty_frame_with_columns(store: RunStore):
    frame = store.rounds(store.create_run(make_config()))
    assert frame.empty
    assert tuple(frame.columns) == ROUND_COLUMNS


def test_nan_loss_survives_as_nan(store: RunStore):
    run_id = store.create_run(make_config())
    store.add_round(run_id, make_round(1, val_loss=float("nan")))
    assert math.isnan(store.rounds(run_id)["val_loss"].iloc[0])


def test_rounds_are_visible_from_a_second_store_at_once(tmp_path: Path):
    writer = RunStore(tmp_path / "fedlab.db")
    reader = RunStore(tmp_path / "fedlab.db")
    run_id = writer.create_run(make_config())
    writer.set_status(run_id, "running")
    writer.add_round(run_id, make_round(1))
    assert reader.rounds(run_id)["round"].tolist() == [1]
    writer.add_round(run_id, make_round(2))
    assert reader.rounds(run_id)["round"].tolist() == [1, 2]
    assert reader.get_run(run_id).status == "running"


def test_new_run_is_queued_with_created_time_and_readable_name(store: RunStore):
    run = store.get_run(store.create_run(make_config(data=DataConfig(n=17))))
    assert run.status == "queued"
    assert run.created_at.tzinfo is not None
    assert run.started_at is None and run.finished_at is None
    assert run.name == "central · federated · N17"


def test_default_name_for_custom_features_and_explicit_names():
    assert default_name(make_config(features=("cat_id", "latitude"), mode="centralized")).startswith(
        "custom (2 features) · centralized"
    )
    assert default_name(make_config(features=ALL_FEATURES)).startswith("biggest ·")
    assert default_name(make_config(name="my run")) == "my run"


def test_given_name_wins_over_default(store: RunStore):
    assert store.get_run(store.create_run(make_config(), name="baseline A")).name == "baseline A"


def test_status_changes_set_start_and_finish_times(store: RunStore):
    run_id = store.create_run(make_config())
    store.set_status(run_id, "running")
    running = store.get_run(run_id)
    assert running.started_at is not None and running.finished_at is None
    store.set_status(run_id, "failed", error="bad data")
    failed = store.get_run(run_id)
    assert failed.finished_at >= failed.started_at
    assert failed.error == "bad data"


def test_testing_run_is_active_keeps_its_start_and_cannot_be_stopped(store: RunStore):
    run_id = store.create_run(make_config())
    store.set_status(run_id, "running")
    started = store.get_run(run_id).started_at
    store.set_status(run_id, "testing")
    testing = store.get_run(run_id)
    assert testing.is_active and not testing.can_stop
    assert testing.started_at == started and testing.finished_at is None


def test_unknown_status_is_refused(store: RunStore):
    with pytest.raises(ValueError, match="status"):
        store.set_status(store.create_run(make_config()), "paused")


def test_unknown_run_id_gives_none_or_key_error(store: RunStore):
    assert store.get_run("nope") is None
    for call in (
        lambda: store.rounds("nope"),
        lambda: store.add_round("nope", make_round(1)),
        lambda: store.set_status("nope", "running"),
        lambda: store.rename("nope", "x"),
        lambda: store.delete("nope"),
        lambda: store.set_reference("nope"),
        lambda: store.export_json("nope"),
        lambda: store.finish("nope", status="finished", test=None, baselines=None, timing={}, model_path=None),
    ):
        with pytest.raises(KeyError, match="nope"):
            call()


def test_list_runs_filters_by_session_newest_first(store: RunStore):
    first = store.create_run(make_config(), session_id="a")
    store.create_run(make_config(), session_id="b")
    second = store.create_run(make_config(), session_id="a")
    assert [run.id for run in store.list_runs(session_id="a")] == [second, first]
    assert len(store.list_runs()) == 3


def test_list_runs_filters_by_status(store: RunStore):
    queued = store.create_run(make_config())
    running = store.create_run(make_config())
    store.set_status(running, "running")
    assert [run.id for run in store.list_runs(statuses=("running",))] == [running]
    assert {run.id for run in store.list_runs(statuses=("queued", "running"))} == {queued, running}


def test_list_runs_skips_a_row_with_unreadable_config(store: RunStore):
    good = store.create_run(make_config())
    bad = store.create_run(make_config())
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET config = ? WHERE id = ?", (json.dumps({"mode": "telepathy"}), bad))
    assert [run.id for run in store.list_runs()] == [good]


def test_rename(store: RunStore):
    run_id = store.create_run(make_config())
    store.rename(run_id, "  better name ")
    assert store.get_run(run_id).name == "better name"
    with pytest.raises(ValueError):
        store.rename(run_id, "   ")


def test_delete_removes_run_rounds_and_its_model_file(store: RunStore):
    model = store.folder / "models" / "m.keras"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    run_id = store.create_run(make_config())
    store.add_round(run_id, make_round(1))
    store.finish(run_id, status="finished", test=None, baselines=None, timing={}, model_path=str(model))
    store.delete(run_id)
    assert store.get_run(run_id) is None
    assert not model.exists()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM rounds WHERE run_id = ?", (run_id,)).fetchone()[0] == 0


def test_deleting_a_run_row_deletes_its_rounds_through_the_foreign_key(store: RunStore):
    kept, deleted = store.create_run(make_config()), store.create_run(make_config())
    for run_id in (kept, deleted):
        store.add_round(run_id, make_round(1))
    with store._write() as conn:  # a plain DELETE: only the ON DELETE CASCADE can take the rounds along
        conn.execute("DELETE FROM runs WHERE id = ?", (deleted,))
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT DISTINCT run_id FROM rounds").fetchall() == [(kept,)]


def test_round_summaries_count_rounds_and_best_val_accuracy_per_run(store: RunStore):
    two, none = store.create_run(make_config()), store.create_run(make_config())
    store.add_round(two, make_round(1, val_accuracy=0.3))
    store.add_round(two, make_round(2, val_accuracy=0.2))
    summaries = store.round_summaries()
    assert (summaries[two].rounds, summaries[two].best_val_accuracy) == (2, pytest.approx(0.3))
    assert none not in summaries


def test_delete_keeps_a_model_file_outside_the_store_folder(tmp_path: Path):
    store = RunStore(tmp_path / "store" / "fedlab.db")
    model = tmp_path / "elsewhere.keras"
    model.write_bytes(b"weights")
    run_id = store.create_run(make_config())
    store.finish(run_id, status="finished", test=None, baselines=None, timing={}, model_path=str(model))
    store.delete(run_id)
    assert model.exists()


def test_reference_pin_change_and_clear(store: RunStore):
    first, second = store.create_run(make_config()), store.create_run(make_config())
    assert store.reference() is None
    store.set_reference(first)
    store.set_reference(second)
    assert store.reference() == second
    store.set_reference(None)
    assert store.reference() is None


def test_deleting_the_reference_run_clears_the_reference(store: RunStore):
    run_id = store.create_run(make_config())
    store.set_reference(run_id)
    store.delete(run_id)
    assert store.reference() is None


def test_mark_interrupted_leaves_runs_of_this_live_process(store: RunStore):
    run_id = store.create_run(make_config())
    store.set_status(run_id, "running")
    assert store.mark_interrupted() == 0
    assert store.get_run(run_id).status == "running"


def test_mark_interrupted_flips_queued_running_and_testing_runs_of_a_gone_process(store: RunStore):
    running, queued, finished, testing = (store.create_run(make_config()) for _ in range(4))
    store.set_status(running, "running")
    store.set_status(testing, "testing")
    store.set_status(finished, "finished")
    # Same pid, another process token: what a restarted container's earlier process looks like.
    gone = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": "earlier process"})
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET owner = ?", (gone,))
    assert store.mark_interrupted() == 3
    assert store.get_run(running).status == "interrupted"
    assert store.get_run(queued).status == "interrupted"
    assert store.get_run(testing).status == "interrupted"
    assert store.get_run(finished).status == "finished"
    assert store.get_run(running).finished_at is not None


def test_mark_interrupted_leaves_a_live_process_s_run_and_flips_it_once_that_process_is_gone(
    store: RunStore, tmp_path: Path
):
    """What a `fedlab run` in a terminal looks like to the dashboard: a run owned by another, live process."""
    process = subprocess.Popen(
        [sys.executable, "-c", _OWNING_WRITER, str(store.path)], stdout=subprocess.PIPE, text=True
    )
    try:
        run_id = process.stdout.readline().strip()
        assert run_id, "the writer process ended before creating its run"
        assert store.mark_interrupted() == 0
        assert store.get_run(run_id).status == "running"
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()
    assert store.mark_interrupted() == 1
    run = store.get_run(run_id)
    assert run.status == "interrupted" and "ended before it finished" in run.error


def test_a_later_process_reusing_the_owners_pid_does_not_keep_the_run_alive(store: RunStore):
    run_id = store.create_run(make_config())
    store.set_status(run_id, "running")
    parent = os.getppid()  # alive, but started long before the owner it stands in for
    owner = json.dumps({"host": socket.gethostname(), "pid": parent, "token": "x", "started": 1.0})
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET owner = ?", (owner,))
    assert store.mark_interrupted() == 1


def test_export_json_has_the_cli_keys_and_run_fields(store: RunStore):
    run_id = store.create_run(make_config(), name="exported")
    store.add_round(run_id, make_round(1, val_loss=float("nan")))
    store.finish(
        run_id,
        status="finished",
        test=make_test_report(),
        baselines={"majority": 0.2},
        timing={"train_seconds": 1.0},
        model_path=None,
        extra={"clients": 4},
    )
    exported = json.loads(store.export_json(run_id))
    assert {"config", "rounds", "test", "baselines", "timing", "data", "status", "name"} <= exported.keys()
    assert exported["data"] == {"clients": 4}
    assert ExperimentConfig.from_dict(exported["config"]) == make_config()
    assert exported["rounds"][0]["round"] == 1 and exported["rounds"][0]["val_loss"] is None
    assert exported["test"]["accuracy"] == 0.4
    assert (exported["status"], exported["name"]) == ("finished", "exported")


def test_export_rounds_csv_has_header_and_one_line_per_round(store: RunStore):
    run_id = store.create_run(make_config())
    for number in (1, 2):
        store.add_round(run_id, make_round(number))
    lines = store.export_rounds_csv(run_id).strip().splitlines()
    assert lines[0].split(",") == list(ROUND_COLUMNS)
    assert len(lines) == 3


def test_two_threads_writing_rounds_to_different_runs_lose_nothing(store: RunStore):
    run_ids = [store.create_run(make_config()) for _ in range(2)]
    start = threading.Barrier(len(run_ids))
    errors: list[BaseException] = []

    def write_rounds(run_id: str) -> None:
        try:
            start.wait()
            for number in range(1, 101):
                store.add_round(run_id, make_round(number))
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=write_rounds, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    for run_id in run_ids:
        assert store.rounds(run_id)["round"].tolist() == list(range(1, 101))


_CRASHING_WRITER = textwrap.dedent("""
    import sys, time
    from fedlab.config import ExperimentConfig
    from fedlab.records import RoundRecord
    from fedlab.runs.store import RunStore

    store = RunStore(sys.argv[1])
    run_id = store.create_run(ExperimentConfig(rounds=10))
    store.set_status(run_id, "running")
    for number in (1, 2, 3):
        store.add_round(run_id, RoundRecord(round=number, train_loss=1.0, train_accuracy=0.5, val_loss=1.0,
                                            val_accuracy=0.5, clients=3, seconds=0.1))
    print(run_id, flush=True)
    time.sleep(60)
""")


_OWNING_WRITER = textwrap.dedent("""
    import sys, time
    from fedlab.config import ExperimentConfig
    from fedlab.runs.store import RunStore

    store = RunStore(sys.argv[1])
    run_id = store.create_run(ExperimentConfig(rounds=10))
    store.set_status(run_id, "running")
    print(run_id, flush=True)
    time.sleep(60)
""")


def test_process_killed_mid_run_leaves_a_sound_store_with_its_rounds(tmp_path: Path):
    path = tmp_path / "fedlab.db"
    process = subprocess.Popen([sys.executable, "-c", _CRASHING_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        run_id = process.stdout.readline().strip()
        assert run_id, "the writer process ended before writing its rounds"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()

    store = RunStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.rounds(run_id)["round"].tolist() == [1, 2, 3]
    assert store.get_run(run_id).status == "running"
    assert store.mark_interrupted() == 1
    assert store.get_run(run_id).status == "interrupted"
