"""The job manager, driven by a fake experiment that yields rounds quickly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedlab.config import ExperimentConfig
from fedlab.errors import DataError, FedlabError
from fedlab.runs.jobs import JobManager
from fedlab.runs.store import RunStore
from tests.fakes import FakeExperiment, FakeFactory

# A crash inside the worker thread must fail the test, not just warn.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

WAIT = 10.0  # generous upper bound; every test normally finishes in well under a second


def config(rounds: int = 3) -> ExperimentConfig:
    return ExperimentConfig(rounds=rounds, gru_units=8)


def hold_first_run_at_round(factory: FakeFactory, number: int) -> tuple[threading.Event, threading.Event]:
    """Makes the first experiment wait before round `number` until released; returns (reached, release)."""
    reached, release = threading.Event(), threading.Event()

    def before_round(experiment: FakeExperiment, current: int) -> None:
        if experiment is factory.made[0] and current == number:
            reached.set()
            assert release.wait(WAIT), "test never released the held run"

    factory.before_round = before_round
    return reached, release


def release_when_stopped(store: RunStore, run_id: str, release: threading.Event) -> None:
    deadline = time.monotonic() + WAIT
    while store.get_run(run_id).status != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "fedlab.db")


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory(round_seconds=0.005)


@pytest.fixture
def manager(store: RunStore, factory: FakeFactory, tmp_path: Path) -> Iterator[JobManager]:
    jobs = JobManager(store, experiment_factory=factory, model_dir=tmp_path / "models")
    yield jobs
    jobs.shutdown(timeout=WAIT)


def training_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "fedlab-training"]


def test_run_rounds_reach_store_in_order_and_it_finishes_with_test_and_baselines(
    manager: JobManager, store: RunStore, factory: FakeFactory
):
    run_id = manager.submit(config(rounds=4), session_id="s1")
    assert manager.wait_idle(WAIT)
    run = store.get_run(run_id)
    assert run.status == "finished"
    assert store.rounds(run_id)["round"].tolist() == [1, 2, 3, 4]
    experiment = factory.made[0]
    assert run.test == experiment.test().to_dict()
    assert run.baselines == experiment.baselines()
    assert run.timing == {"preprocess_seconds": 0.001, "build_seconds": 0.001, "train_seconds": pytest.approx(0.02)}
    assert run.extra == experiment.summary()
    assert run.session_id == "s1"
    assert factory.made[0].closed


def test_run_shows_testing_after_its_last_round_while_the_kept_model_is_tested(
    manager: JobManager, store: RunStore, factory: FakeFactory
):
    seen: list[tuple[str, int]] = []

    def record_status(experiment: FakeExperiment) -> None:
        (run,) = store.list_runs()
        seen.append((run.status, len(store.rounds(run.id))))

    factory.on_test = record_status
    run_id = manager.submit(config(rounds=3))
    assert manager.wait_idle(WAIT)
    assert seen == [("testing", 3)]
    assert store.get_run(run_id).status == "finished"


def test_finished_run_saves_its_model_under_model_dir(manager: JobManager, store: RunStore, tmp_path: Path):
    run_id = manager.submit(config())
    assert manager.wait_idle(WAIT)
    model_path = store.get_run(run_id).model_path
    assert model_path == str(tmp_path / "models" / f"{run_id}.keras")
    assert Path(model_path).read_bytes() == b"fake keras model"


def test_without_model_dir_no_model_is_saved(store: RunStore, factory: FakeFactory):
    jobs = JobManager(store, experiment_factory=factory)
    try:
        run_id = jobs.submit(config())
        assert jobs.wait_idle(WAIT)
    finally:
        jobs.shutdown(timeout=WAIT)
    assert store.get_run(run_id).model_path is None
    assert factory.made[0].saved_to is None


def test_failed_model_save_keeps_the_results(manager: JobManager, store: RunStore, factory: FakeFactory):
    factory.save_error = OSError("disk full")
    run_id = manager.submit(config())
    assert manager.wait_idle(WAIT)
    run = store.get_run(run_id)
    assert run.status == "finished" and run.test is not None
    assert run.model_path is None
    assert "disk full" in run.extra["model_error"]


def test_rounds_are_in_the_store_while_the_run_is_still_going(
    manager: JobManager, store: RunStore, factory: FakeFactory
):
    reached, release = hold_first_run_at_round(factory, 3)
    run_id = manager.submit(config(rounds=4))
    assert reached.wait(WAIT)
    assert store.rounds(run_id)["round"].tolist() == [1, 2]
    assert store.get_run(run_id).status == "running"
    release.set()
    assert manager.wait_idle(WAIT)


def test_two_runs_run_one_after_the_other_with_second_at_position_one(
    manager: JobManager, store: RunStore, factory: FakeFactory
):
    reached, release = hold_first_run_at_round(factory, 2)
    first = manager.submit(config())
    second = manager.submit(config())
    assert reached.wait(WAIT)
    assert (manager.position(first), manager.position(second)) == (0, 1)
    assert manager.active() == [first, second]
    assert store.get_run(second).status == "queued"
    release.set()
    assert manager.wait_idle(WAIT)

    assert factory.most_running == 1
    assert factory.made[0].ended <= factory.made[1].started
    assert store.get_run(first).finished_at <= store.get_run(second).started_at
    assert [store.get_run(run_id).status for run_id in (first, second)] == ["finished", "finished"]
    assert manager.position(first) is None and manager.active() == []


def test_run_submitted_after_the_worker_went_idle_still_runs(manager: JobManager, store: RunStore):
    first = manager.submit(config())
    assert manager.wait_idle(WAIT)
    second = manager.submit(config())
    assert manager.wait_idle(WAIT)
    assert [store.get_run(run_id).status for run_id in (first, second)] == ["finished", "finished"]


def test_stop_of_running_run_ends_it_after_the_current_round_keeping_rounds(
    manager: JobManager, store: RunStore, factory: FakeFactory
):
    def stop_during_round_three(experiment: FakeExperiment, number: int) -> None:
        if number == 3:
            manager.stop(manager.active()[0])

    factory.before_round = stop_during_round_three
    run_id = manager.submit(config(rounds=50))
    assert manager.wait_idle(WAIT)
    run = store.get_run(run_id)
    assert run.status == "stopped"
    assert store.rounds(run_id)["round"].tolist() == [1, 2, 3]
    assert run.test is not None  # tested on its kept state
    assert factory.made[0].closed


def test_stop_of_queued_run_removes_it_without_rounds(manager: JobManager, store: RunStore, factory: FakeFactory):
    reached, release = hold_first_run_at_round(factory, 1)
    first = manager.submit(config())
    second = manager.submit(config())
    assert reached.wait(WAIT)
    manager.stop(second)
    assert manager.position(second) is None
    assert store.get_run(second).status == "stopped"
    release.set()
    assert manager.wait_idle(WAIT)
    assert len(factory.made) == 1  # the stopped run never started
    assert store.rounds(second).empty
    assert store.get_run(first).status == "finished"


def test_stop_of_inactive_run_changes_nothing(manager: JobManager, store: RunStore):
    run_id = manager.submit(config())
    assert manager.wait_idle(WAIT)
    manager.stop(run_id)
    assert store.get_run(run_id).status == "finished"


def test_fedlab_error_in_prepare_fails_the_run_with_its_message(
    manager: JobManager, store: RunStore, factory: FakeFactory
):
    factory.prepare_error = DataError("latitude is not a number", line=12, column="latitude")
    run_id = manager.submit(config())
    assert manager.wait_idle(WAIT)
    run = store.get_run(run_id)
    assert run.status == "failed"
    assert run.error == "latitude is not a number (line 12, column 'latitude')"
    assert factory.made[0].closed


def test_unexpected_error_fails_the_run_is_logged_and_the_next_job_runs(
    manager: JobManager, store: RunStore, factory: FakeFactory, caplog: pytest.LogCaptureFixture
):
    def explode_in_first_run(experiment: FakeExperiment, number: int) -> None:
        if experiment is factory.made[0] and number == 2:
            raise RuntimeError("boom")

    factory.before_round = explode_in_first_run
    with caplog.at_level(logging.ERROR, logger="fedlab.runs.jobs"):
        broken = manager.submit(config())
        healthy = manager.submit(config())
        assert manager.wait_idle(WAIT)
    run = store.get_run(broken)
    assert run.status == "failed"
    assert run.error == "internal error: RuntimeError: boom"
    assert store.rounds(broken)["round"].tolist() == [1]
    assert factory.made[0].closed
    assert any(record.exc_info and "boom" in str(record.exc_info[1]) for record in caplog.records)
    assert store.get_run(healthy).status == "finished"


def test_no_thread_starts_before_the_first_submit(store: RunStore, factory: FakeFactory):
    before = training_threads()
    jobs = JobManager(store, experiment_factory=factory)
    assert training_threads() == before
    jobs.shutdown(timeout=WAIT)


def test_shutdown_stops_the_running_run_drops_the_queue_and_joins_the_thread(store: RunStore, factory: FakeFactory):
    jobs = JobManager(store, experiment_factory=factory)
    reached, release = hold_first_run_at_round(factory, 2)
    running = jobs.submit(config(rounds=50))
    queued = jobs.submit(config())
    assert reached.wait(WAIT)
    assert len(training_threads()) == 1
    # Release the held round only once shutdown has begun (it marks the dropped run first), so the
    # run must end right after that round.
    threading.Thread(target=release_when_stopped, args=(store, queued, release), daemon=True).start()
    jobs.shutdown(timeout=WAIT)
    assert training_threads() == []
    assert store.get_run(running).status == "stopped"
    assert store.rounds(running)["round"].tolist() == [1, 2]
    assert store.get_run(queued).status == "stopped"
    with pytest.raises(RuntimeError, match="shut down"):
        jobs.submit(config())


# ----- TensorBoard logs -----


def logged_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from every event file under `folder` (tf.summary writes scalars as tensors)."""
    tf = pytest.importorskip("tensorflow")
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return scalars


@pytest.fixture
def logging_manager(store: RunStore, factory: FakeFactory, tmp_path: Path) -> Iterator[JobManager]:
    pytest.importorskip("tensorflow")  # imported here, so its start-up is not counted against WAIT
    jobs = JobManager(store, experiment_factory=factory, tensorboard_dir=tmp_path / "tensorboard")
    yield jobs
    jobs.shutdown(timeout=WAIT)


def test_tensorboard_log_of_a_run_holds_every_rounds_scalars(
    logging_manager: JobManager, store: RunStore, tmp_path: Path
):
    run_id = logging_manager.submit(config(rounds=3))
    assert logging_manager.wait_idle(WAIT)
    scalars = logged_scalars(tmp_path / "tensorboard" / run_id)
    assert set(scalars) == {"train/loss", "train/accuracy", "validation/loss", "validation/accuracy"}
    assert [step for step, _ in scalars["validation/accuracy"]] == [1, 2, 3]
    assert [value for _, value in scalars["train/loss"]] == pytest.approx([2.0, 1.0, 2 / 3])
    assert [value for _, value in scalars["validation/accuracy"]] == pytest.approx([0.2, 0.25, 0.3])
    assert "tensorboard_error" not in store.get_run(run_id).extra


def test_tensorboard_log_shows_rounds_while_the_run_is_going(
    logging_manager: JobManager, factory: FakeFactory, tmp_path: Path
):
    reached, release = hold_first_run_at_round(factory, 3)
    run_id = logging_manager.submit(config(rounds=4))
    assert reached.wait(WAIT)
    steps = [step for step, _ in logged_scalars(tmp_path / "tensorboard" / run_id)["train/loss"]]
    release.set()
    assert logging_manager.wait_idle(WAIT)
    assert steps == [1, 2]


def test_each_run_logs_into_its_own_folder(logging_manager: JobManager, tmp_path: Path):
    first = logging_manager.submit(config(rounds=2))
    second = logging_manager.submit(config(rounds=3))
    assert logging_manager.wait_idle(WAIT)
    assert sorted(p.name for p in (tmp_path / "tensorboard").iterdir()) == sorted([first, second])
    assert len(logged_scalars(tmp_path / "tensorboard" / second)["train/loss"]) == 3


def test_unwritable_tensorboard_dir_keeps_the_run_and_notes_why(
    store: RunStore, factory: FakeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should go")
    pytest.importorskip("tensorflow")
    jobs = JobManager(store, experiment_factory=factory, tensorboard_dir=blocker)
    try:
        with caplog.at_level(logging.WARNING, logger="fedlab.runs.tblog"):
            run_id = jobs.submit(config(rounds=3))
            assert jobs.wait_idle(WAIT)
    finally:
        jobs.shutdown(timeout=WAIT)
    run = store.get_run(run_id)
    assert run.status == "finished" and run.test is not None
    assert store.rounds(run_id)["round"].tolist() == [1, 2, 3]
    assert "not a directory" in run.extra["tensorboard_error"]
    warnings = [r for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not every round


def test_without_tensorboard_dir_no_event_file_is_written(manager: JobManager, tmp_path: Path):
    manager.submit(config())
    assert manager.wait_idle(WAIT)
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


# ----- one server, a whole class: the per-session queue limit -----


@pytest.fixture
def limited(store: RunStore, factory: FakeFactory) -> Iterator[JobManager]:
    jobs = JobManager(store, experiment_factory=factory, queue_limit=3)
    yield jobs
    jobs.shutdown(timeout=WAIT)


def test_a_fourth_run_of_one_session_is_refused_and_nothing_is_queued(
    limited: JobManager, store: RunStore, factory: FakeFactory
):
    reached, release = hold_first_run_at_round(factory, 1)
    mine = [limited.submit(config(), session_id="a") for _ in range(3)]  # one training, two waiting
    assert reached.wait(WAIT)
    with pytest.raises(FedlabError, match="at most 3 runs"):
        limited.submit(config(), session_id="a")
    assert limited.active() == mine
    assert {run.id for run in store.list_runs()} == set(mine)
    # Other sessions and the app's own runs (no session) are not held back by session a.
    other = limited.submit(config(), session_id="b")
    demo = limited.submit(config())
    release.set()
    assert limited.wait_idle(WAIT)
    assert {store.get_run(run_id).status for run_id in [*mine, other, demo]} == {"finished"}
    limited.submit(config(), session_id="a")  # room again once its runs ended
    assert limited.wait_idle(WAIT)


def test_a_pair_that_does_not_fit_is_refused_whole(limited: JobManager, factory: FakeFactory):
    reached, release = hold_first_run_at_round(factory, 1)
    limited.submit(config(), session_id="a")
    limited.submit(config(), session_id="a")
    assert reached.wait(WAIT)
    limited.check_room("a", 1)
    with pytest.raises(FedlabError):
        limited.check_room("a", 2)
    release.set()
    assert limited.wait_idle(WAIT)


def test_queue_limit_from_env(monkeypatch: pytest.MonkeyPatch):
    from fedlab.errors import ConfigError
    from fedlab.runs.jobs import queue_limit_from_env

    monkeypatch.delenv("FEDLAB_MAX_QUEUED_PER_SESSION", raising=False)
    assert queue_limit_from_env() == 3
    monkeypatch.setenv("FEDLAB_MAX_QUEUED_PER_SESSION", "5")
    assert queue_limit_from_env() == 5
    for bad in ("0", "many"):
        monkeypatch.setenv("FEDLAB_MAX_QUEUED_PER_SESSION", bad)
        with pytest.raises(ConfigError, match="FEDLAB_MAX_QUEUED_PER_SESSION"):
            queue_limit_from_env()


# ----- the recording driver the job manager shares with `fedlab run` -----


def test_record_run_marks_a_ctrl_c_interrupted_keeping_its_rounds(store: RunStore, factory: FakeFactory):
    from fedlab.runs.recording import record_run

    def ctrl_c_in_round_three(experiment: FakeExperiment, number: int) -> None:
        if number == 3:
            raise KeyboardInterrupt

    factory.before_round = ctrl_c_in_round_three
    run_id = store.create_run(config(rounds=5))
    store.set_status(run_id, "running")
    seen = []
    with pytest.raises(KeyboardInterrupt):
        record_run(store, run_id, factory(config(rounds=5)), on_round=seen.append)
    run = store.get_run(run_id)
    assert (run.status, run.error) == ("interrupted", "interrupted (Ctrl-C)")
    assert store.rounds(run_id)["round"].tolist() == [1, 2] == [record.round for record in seen]


def test_record_run_fails_the_run_with_the_error_and_raises_it(store: RunStore, factory: FakeFactory):
    from fedlab.runs.recording import record_run

    factory.prepare_error = DataError("no check-ins left")
    run_id = store.create_run(config())
    with pytest.raises(DataError):
        record_run(store, run_id, factory(config()))
    run = store.get_run(run_id)
    assert (run.status, run.error) == ("failed", "no check-ins left")
