"""The in-process job manager: one background thread trains queued runs one at a time.

Pages never block on training: they submit, then poll the run store, which the worker writes
round by round (and, when asked, a TensorBoard log per run beside it).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedlab.config import ExperimentConfig, positive_int_from_env
from fedlab.errors import FedlabError
from fedlab.runs.recording import Trainable, failure_message, one_line, record_end, record_run
from fedlab.runs.schedule import Waiting, fair_order
from fedlab.runs.store import RunStore
from fedlab.runs.tblog import BestEffortLog, log_dir_for

log = logging.getLogger(__name__)

QUEUE_LIMIT_VARIABLE = "FEDLAB_MAX_QUEUED_PER_SESSION"
DEFAULT_QUEUE_LIMIT = 3


def queue_limit_from_env() -> int:
    """FEDLAB_MAX_QUEUED_PER_SESSION (default 3): how many runs one owner (a signed-in user on a shared server,
    else a browser session) may have waiting or training."""
    return positive_int_from_env(QUEUE_LIMIT_VARIABLE, DEFAULT_QUEUE_LIMIT)


@dataclass(eq=False)
class _Job:
    run_id: str
    config: ExperimentConfig
    session_id: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    group: str = ""  # runs queued together (an ablation sweep) count once against the session's limit
    seq: int = 0  # the order it was queued in
    front: int | None = None  # the order it was moved to the front in (by the admin), None = not moved


class JobManager:
    """Owns one daemon worker thread (started on first submit) and a queue of runs, served fairly: owners in
    turn, each owner's runs in order (fedlab.runs.schedule.fair_order).

    model_dir: where each run's model is saved as <run_id>.keras; None saves none.
    tensorboard_dir: where each run's TensorBoard log goes, in a folder named by its run id; None writes none.
    queue_limit: how many runs one session (a non-empty session id) may have queued or training at once;
    None for no limit.
    admit: called with the owner before queuing; raises FedlabError for one who may not queue.
    """

    def __init__(
        self,
        store: RunStore,
        *,
        experiment_factory: Callable[[ExperimentConfig], Trainable],
        model_dir: str | os.PathLike | None = None,
        tensorboard_dir: str | os.PathLike | None = None,
        queue_limit: int | None = None,
        admit: Callable[[str], None] | None = None,
    ):
        self.store = store
        self._queue_limit = queue_limit
        self._admit = admit  # raises FedlabError for an owner who may not queue (on a shared server: no user)
        self._factory = experiment_factory
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir is not None else None
        self._changed = threading.Condition()  # guards the fields below; notified on every change
        self._queue: deque[_Job] = deque()  # in the order queued; _ordered() gives the order they start in
        self._served: dict[str, int] = {}  # runs started per owner since the queue was last empty
        self._numbers = itertools.count()
        self._fronts = itertools.count()
        self._current: _Job | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # ----- what pages call -----

    def submit(self, config: ExperimentConfig, *, session_id: str = "", name: str = "", group: str = "") -> str:
        """Creates the run (queued) in the store and queues it; returns its id at once.

        Raises FedlabError, queuing nothing, when the session already has `queue_limit` runs queued or training.
        """
        self._refuse_if_closed()
        with self._changed:
            joining = bool(group) and any(job.group == group for job in self._jobs())
        if not joining:
            self.check_room(session_id)
        # The database write happens outside the lock so polling pages are never held up by it.
        run_id = self.store.create_run(config, session_id=session_id, name=name)
        job = _Job(run_id, config, session_id, group=group, seq=next(self._numbers))
        with self._changed:
            closed = self._closed
            full = not closed and self._waiting(session_id, joining=group) >= self._limit(session_id)
            if not closed and not full:
                self._queue.append(job)
                self._start_worker()
                self._changed.notify_all()
        if full:  # another tab of the session queued one meanwhile
            self.store.delete(run_id)
            raise _no_room(self._limit(session_id))
        if closed:  # shut down while the run was being created
            self._mark_stopped([job])
            self._refuse_if_closed()
        return run_id

    def check_room(self, session_id: str, count: int = 1) -> None:
        """Raises FedlabError when `count` more runs of the session would pass the queue limit."""
        if self._admit is not None:
            self._admit(session_id)
        with self._changed:
            waiting, limit = self._waiting(session_id), self._limit(session_id)
        if waiting + count > limit:
            raise _no_room(limit)

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

    def is_active(self, run_id: str) -> bool:
        """Whether this manager trains or queues the run (runs of a `fedlab run` in a terminal are not its)."""
        return self.position(run_id) is not None

    def position(self, run_id: str) -> int | None:
        """0 = running now, 1.. = place in the queue, None = not active here."""
        with self._changed:
            if self._current is not None and self._current.run_id == run_id:
                return 0
            for place, job in enumerate(self._ordered(), start=1):
                if job.run_id == run_id:
                    return place
        return None

    def active(self) -> list[str]:
        """Run ids: the running one first, then the queue in order."""
        with self._changed:
            jobs = ([self._current] if self._current is not None else []) + self._ordered()
        return [job.run_id for job in jobs]

    def owners(self) -> dict[str, str]:
        """Run id -> owner key of every run this manager trains or queues."""
        with self._changed:
            jobs = ([self._current] if self._current is not None else []) + list(self._queue)
        return {job.run_id: job.session_id for job in jobs}

    def move_to_front(self, run_id: str) -> bool:
        """Makes a queued run the next to start (the admin's, for the projector); False when it is not queued."""
        with self._changed:
            job = next((job for job in self._queue if job.run_id == run_id), None)
            if job is None:
                return False
            job.front = next(self._fronts)
            self._changed.notify_all()
        return True

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

    def _jobs(self) -> list[_Job]:
        # Called with the lock held.
        return ([self._current] if self._current is not None else []) + list(self._queue)

    def _waiting(self, session_id: str, *, joining: str = "") -> int:
        # Called with the lock held. A group counts once; the group a run joins is not counted again.
        return len(
            {
                job.group or job.run_id
                for job in self._jobs()
                if job.session_id == session_id and not (joining and job.group == joining)
            }
        )

    def _ordered(self) -> list[_Job]:
        # Called with the lock held.
        by_id = {job.run_id: job for job in self._queue}
        waiting = [Waiting(job.run_id, job.session_id, job.seq, job.front) for job in self._queue]
        return [by_id[w.run_id] for w in fair_order(waiting, self._served)]

    def _limit(self, session_id: str) -> float:
        # Runs of no session (demo runs) are queued by the app itself, never by a visitor.
        return self._queue_limit if self._queue_limit is not None and session_id else float("inf")

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
                    if not self._queue:  # a new busy spell: every owner starts again at turn 0
                        self._served.clear()
                    self._changed.notify_all()

    def _next_job(self) -> _Job | None:
        """Waits for a job (no polling); None once shut down."""
        with self._changed:
            self._changed.wait_for(lambda: self._queue or self._closed)
            if self._closed:
                return None
            # Taking and marking current under one lock: stop() never misses a job in between.
            self._current = self._ordered()[0]
            self._queue.remove(self._current)
            owner = self._current.session_id
            self._served[owner] = self._served.get(owner, 0) + 1
            self._changed.notify_all()
            return self._current

    def _run_job(self, job: _Job) -> None:
        try:
            self.store.set_status(job.run_id, "running")
            if job.stop.is_set():  # stopped in the moment it left the queue: skip the costly prepare
                self.store.finish(job.run_id, status="stopped", test=None, baselines=None, timing={}, model_path=None)
                return
            experiment = self._factory(job.config)
        except Exception as exc:
            if not isinstance(exc, FedlabError):
                log.exception("run %s failed with an internal error", job.run_id)
            record_end(self.store, job.run_id, "failed", failure_message(exc))
            return
        try:
            record_run(
                self.store,
                job.run_id,
                experiment,
                stop=job.stop,
                board=self._tensorboard_log(job),
                save_model=functools.partial(self._save_model, job),
            )
        except FedlabError:
            pass  # recorded with its message; nothing for the log
        except Exception:
            log.exception("run %s failed with an internal error", job.run_id)
        finally:
            _close(experiment, job.run_id)

    def _tensorboard_log(self, job: _Job) -> BestEffortLog | None:
        if self._tensorboard_dir is None:
            return None
        return BestEffortLog(log_dir_for(self._tensorboard_dir, job.run_id))

    def _save_model(self, job: _Job, experiment: Trainable, extra: dict) -> str | None:
        """Saves to model_dir/<run_id>.keras. A failed save keeps the run's results (noted in extra)."""
        if self._model_dir is None:
            return None
        path = self._model_dir / f"{job.run_id}.keras"
        try:
            self._model_dir.mkdir(parents=True, exist_ok=True)
            experiment.save_model(str(path))
        except Exception as exc:
            log.exception("run %s: could not save the model to %s", job.run_id, path)
            extra["model_error"] = one_line(f"{type(exc).__name__}: {exc}")
            return None
        return str(path)

    def _mark_stopped(self, jobs: list[_Job]) -> None:
        for job in jobs:
            try:
                self.store.set_status(job.run_id, "stopped")
            except KeyError:
                log.info("queued run %s was deleted before it was stopped", job.run_id)


def _no_room(limit: float) -> FedlabError:
    return FedlabError(
        f"Not queued: each user may have at most {limit:.0f} runs queued or training on this server "
        f"({QUEUE_LIMIT_VARIABLE} raises it). Wait for one to finish, or stop one."
    )


def _close(experiment: Trainable, run_id: str) -> None:
    try:
        experiment.close()
    except Exception:
        log.exception("run %s: error while closing the experiment", run_id)
