"""The in-process job manager: one background thread trains queued runs one at a time.

Pages never block on training: they submit, then poll the run store, which the worker writes
round by round (and, when asked, a TensorBoard log per run beside it).
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fedlab.config import ExperimentConfig
from fedlab.errors import FedlabError
from fedlab.records import RoundRecord, TestReport
from fedlab.store import RunStore
from fedlab.tblog import BestEffortLog, log_dir_for

log = logging.getLogger(__name__)

_MAX_MESSAGE = 500  # keep failure messages short enough for a status line


class Experiment(Protocol):
    """What the training engine provides for one run."""

    config: ExperimentConfig
    timing: dict[str, float]  # preprocess_seconds, build_seconds, train_seconds, filled in as it goes

    def prepare(self) -> None: ...  # load data, build model; may raise FedlabError
    def rounds(self) -> Iterator[RoundRecord]: ...  # one record per round; the caller may stop at any time
    def test(self) -> TestReport: ...  # metrics of the kept (lowest validation loss) state
    def baselines(self) -> dict[str, float]: ...
    def save_model(self, path: str) -> None: ...  # Keras format (.keras)
    def close(self) -> None: ...  # always called, also after errors
    def summary(self) -> dict: ...  # small JSON-able description of the data used


@dataclass(eq=False)
class _Job:
    run_id: str
    config: ExperimentConfig
    stop: threading.Event = field(default_factory=threading.Event)


class JobManager:
    """Owns one daemon worker thread (started on first submit) and a FIFO queue of runs.

    model_dir: where each run's model is saved as <run_id>.keras; None saves none.
    tensorboard_dir: where each run's TensorBoard log goes, in a folder named by its run id; None writes none.
    """

    def __init__(self, store: RunStore, *, experiment_factory: Callable[[ExperimentConfig], Experiment],
                 model_dir: str | os.PathLike | None = None, tensorboard_dir: str | os.PathLike | None = None):
        self.store = store
        self._factory = experiment_factory
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir is not None else None
        self._changed = threading.Condition()  # guards the fields below; notified on every change
        self._queue: deque[_Job] = deque()
        self._current: _Job | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # ----- what pages call -----

    def submit(self, config: ExperimentConfig, *, session_id: str = "", name: str = "") -> str:
        """Creates the run (queued) in the store and queues it; returns its id at once."""
        self._refuse_if_closed()
        # The database write happens outside the lock so polling pages are never held up by it.
        run_id = self.store.create_run(config, session_id=session_id, name=name)
        job = _Job(run_id, config)
        with self._changed:
            closed = self._closed
            if not closed:
                self._queue.append(job)
                self._start_worker()
                self._changed.notify_all()
        if closed:  # shut down while the run was being created
            self._mark_stopped([job])
            self._refuse_if_closed()
        return run_id

    def stop(self, run_id: str) -> None:
        """Queued: dropped and marked stopped. Running: ends after its current round. Otherwise nothing."""
        with self._changed:
            if self._current is not None and self._current.run_id == run_id:
                self._current.stop.set()
                return
            job = next((job for job in self._queue if job.run_id == run_id), None)
            if job is None:
                return
            self._queue.remove(job)
            self._changed.notify_all()
        self._mark_stopped([job])

    def position(self, run_id: str) -> int | None:
        """0 = running now, 1.. = place in the queue, None = not active here."""
        with self._changed:
            if self._current is not None and self._current.run_id == run_id:
                return 0
            for place, job in enumerate(self._queue, start=1):
                if job.run_id == run_id:
                    return place
        return None

    def active(self) -> list[str]:
        """Run ids: the running one first, then the queue in order."""
        with self._changed:
            jobs = ([self._current] if self._current is not None else []) + list(self._queue)
        return [job.run_id for job in jobs]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Blocks until nothing runs or waits (for the CLI and tests); False when the timeout passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._current is None and not self._queue, timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stops the current run after its round, drops the queue (marked stopped) and joins the thread."""
        with self._changed:
            self._closed = True
            if self._current is not None:
                self._current.stop.set()
            dropped = list(self._queue)
            self._queue.clear()
            self._changed.notify_all()
            thread = self._thread
        self._mark_stopped(dropped)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("training thread still busy %.0f s after shutdown; leaving it (daemon)", timeout)

    # ----- the worker -----

    def _refuse_if_closed(self) -> None:
        with self._changed:
            if self._closed:
                raise RuntimeError("the job manager has been shut down")

    def _start_worker(self) -> None:
        # Called with the lock held; lazily, so merely creating a manager starts no thread.
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="fedlab-training", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            try:
                self._run_job(job)
            except Exception:  # the loop must survive anything a job does
                log.exception("training thread: unexpected error around run %s", job.run_id)
            finally:
                with self._changed:
                    self._current = None
                    self._changed.notify_all()

    def _next_job(self) -> _Job | None:
        """Waits for a job (no polling); None once shut down."""
        with self._changed:
            self._changed.wait_for(lambda: self._queue or self._closed)
            if self._closed:
                return None
            # Popping and marking current under one lock: stop() never misses a job in between.
            self._current = self._queue.popleft()
            self._changed.notify_all()
            return self._current

    def _run_job(self, job: _Job) -> None:
        experiment: Experiment | None = None
        try:
            self.store.set_status(job.run_id, "running")
            if job.stop.is_set():  # stopped in the moment it left the queue: skip the costly prepare
                self.store.finish(job.run_id, status="stopped", test=None, baselines=None, timing={},
                                  model_path=None)
                return
            experiment = self._factory(job.config)
            experiment.prepare()
            self._train(job, experiment)
        except FedlabError as exc:
            self._record_failure(job, _one_line(str(exc)) or type(exc).__name__, experiment)
        except Exception as exc:
            log.exception("run %s failed with an internal error", job.run_id)
            self._record_failure(job, _one_line(f"internal error: {type(exc).__name__}: {exc}"), experiment)
        finally:
            if experiment is not None:
                _close(experiment, job.run_id)

    def _train(self, job: _Job, experiment: Experiment) -> None:
        board = self._tensorboard_log(job)
        try:
            rounds_done = self._record_rounds(job, experiment, board)
        finally:
            if board is not None:
                board.close()
        stopped = job.stop.is_set()
        extra = dict(experiment.summary())
        if board is not None and board.error is not None:
            extra["tensorboard_error"] = _one_line(board.error)
        if rounds_done == 0:
            # Stopped before any round: there is no trained state to test or save.
            self.store.finish(job.run_id, status="stopped" if stopped else "finished", test=None, baselines=None,
                              timing=dict(experiment.timing), model_path=None, extra=extra)
            return
        self.store.set_status(job.run_id, "testing")
        test = experiment.test()
        baselines = experiment.baselines()
        model_path = self._save_model(job, experiment, extra)
        self.store.finish(job.run_id, status="stopped" if stopped else "finished", test=test, baselines=baselines,
                          timing=dict(experiment.timing), model_path=model_path, extra=extra)

    def _tensorboard_log(self, job: _Job) -> BestEffortLog | None:
        if self._tensorboard_dir is None:
            return None
        return BestEffortLog(log_dir_for(self._tensorboard_dir, job.run_id))

    def _record_rounds(self, job: _Job, experiment: Experiment, board: BestEffortLog | None) -> int:
        """Writes each round as it arrives; stops after the round during which stop was asked."""
        if job.stop.is_set():
            return 0
        count = 0
        records = experiment.rounds()
        try:
            for record in records:
                self.store.add_round(job.run_id, record)
                if board is not None:
                    board.write(record)  # never raises: the store, not this log, is the record of the run
                count += 1
                if job.stop.is_set():
                    break
        finally:
            # Close the generator now so the engine's own cleanup runs before testing.
            close = getattr(records, "close", None)
            if close is not None:
                close()
        return count

    def _save_model(self, job: _Job, experiment: Experiment, extra: dict) -> str | None:
        """Saves to model_dir/<run_id>.keras. A failed save keeps the run's results (noted in extra)."""
        if self._model_dir is None:
            return None
        path = self._model_dir / f"{job.run_id}.keras"
        try:
            self._model_dir.mkdir(parents=True, exist_ok=True)
            experiment.save_model(str(path))
        except Exception as exc:
            log.exception("run %s: could not save the model to %s", job.run_id, path)
            extra["model_error"] = _one_line(f"{type(exc).__name__}: {exc}")
            return None
        return str(path)

    def _record_failure(self, job: _Job, message: str, experiment: Experiment | None) -> None:
        timing = dict(experiment.timing) if experiment is not None else {}
        try:
            self.store.finish(job.run_id, status="failed", test=None, baselines=None, timing=timing,
                              model_path=None, error=message)
        except Exception:  # e.g. the run was deleted meanwhile; the worker goes on either way
            log.exception("run %s: could not record its failure (%s)", job.run_id, message)

    def _mark_stopped(self, jobs: list[_Job]) -> None:
        for job in jobs:
            try:
                self.store.set_status(job.run_id, "stopped")
            except KeyError:
                log.info("queued run %s was deleted before it was stopped", job.run_id)


def _close(experiment: Experiment, run_id: str) -> None:
    try:
        experiment.close()
    except Exception:
        log.exception("run %s: error while closing the experiment", run_id)


def _one_line(message: str) -> str:
    line = " ".join(message.strip().split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 1] + "…"
