"""Training one experiment into the run store as it happens: the driver the job manager and `fedlab run` share.

The caller creates the run and marks it running. `record_run` prepares the experiment, writes each round
as it finishes, marks the run testing while the kept model is tested, then records the test report and
baselines (finished, or stopped when asked to stop), or failed / interrupted with a one-line reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from fedlab.config import ExperimentConfig
from fedlab.errors import FedlabError
from fedlab.records import RoundRecord, TestReport
from fedlab.runs.store import RunStore
from fedlab.runs.tblog import BestEffortLog

log = logging.getLogger(__name__)

_MAX_MESSAGE = 500  # keep failure messages short enough for a status line
INTERRUPTED_MESSAGE = "interrupted (Ctrl-C)"


class Trainable(Protocol):
    """What the training engine (fedlab.learning.engine.Experiment) provides for one run."""

    config: ExperimentConfig
    timing: dict[str, float]  # preprocess_seconds, build_seconds, train_seconds, filled in as it goes

    def prepare(self) -> None: ...  # load data, build model; may raise FedlabError
    def rounds(self) -> Iterator[RoundRecord]: ...  # one record per round; the caller may stop at any time
    def test(self) -> TestReport: ...  # metrics of the kept (lowest validation loss) state
    def baselines(self) -> dict[str, float]: ...
    def save_model(self, path: str) -> None: ...  # Keras format (.keras)
    def close(self) -> None: ...  # always called, also after errors
    def summary(self) -> dict: ...  # small JSON-able description of the data used


def record_run(
    store: RunStore,
    run_id: str,
    experiment: Trainable,
    *,
    stop: threading.Event | None = None,
    board: BestEffortLog | None = None,
    save_model: Callable[[Trainable, dict], str | None] | None = None,
    on_ready: Callable[[dict], None] | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    on_testing: Callable[[], None] | None = None,
) -> str:
    """Trains and tests `experiment` into run `run_id`; returns the status it ended with.

    `stop` ends training after the round during which it was set (the kept state is still tested).
    `board` gets each round too and is closed after the last one. `save_model(experiment, extra)`
    returns where the model went (a failure may be noted in `extra`). An error is recorded (failed, or
    interrupted for Ctrl-C) and raised again; closing the experiment is the caller's.
    """
    try:
        experiment.prepare()
        if on_ready is not None:
            on_ready(dict(experiment.timing))
        try:
            done = record_rounds(store, run_id, experiment, stop=stop, board=board, on_round=on_round)
        finally:
            if board is not None:
                board.close()
        status = "stopped" if stop is not None and stop.is_set() else "finished"
        extra = dict(experiment.summary())
        if board is not None and board.error is not None:
            extra["tensorboard_error"] = one_line(board.error)
        test = baselines = model_path = None
        if done > 0:  # a run stopped before its first round has no trained state to test or save
            store.set_status(run_id, "testing")
            if on_testing is not None:
                on_testing()
            test, baselines = experiment.test(), experiment.baselines()
            model_path = save_model(experiment, extra) if save_model is not None else None
        store.finish(
            run_id,
            status=status,
            test=test,
            baselines=baselines,
            timing=dict(experiment.timing),
            model_path=model_path,
            extra=extra,
        )
        return status
    except KeyboardInterrupt:
        record_end(store, run_id, "interrupted", INTERRUPTED_MESSAGE, timing=experiment.timing)
        raise
    except Exception as exc:
        record_end(store, run_id, "failed", failure_message(exc), timing=experiment.timing)
        raise


def record_rounds(
    store: RunStore,
    run_id: str,
    experiment: Trainable,
    *,
    stop: threading.Event | None = None,
    board: BestEffortLog | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> int:
    """Writes each round to the store as it arrives; stops after the round during which `stop` was set."""
    if stop is not None and stop.is_set():
        return 0
    count = 0
    records = experiment.rounds()
    try:
        for record in records:
            store.add_round(run_id, record)
            if board is not None:
                board.write(record)  # never raises: the store, not this log, is the record of the run
            if on_round is not None:
                on_round(record)
            count += 1
            if stop is not None and stop.is_set():
                break
    finally:
        # Close the generator now so the engine's own cleanup runs before testing.
        close = getattr(records, "close", None)
        if close is not None:
            close()
    return count


def record_end(store: RunStore, run_id: str, status: str, message: str, *, timing: dict | None = None) -> None:
    """Records a run that ended without results; never raises (the run may have been deleted meanwhile)."""
    try:
        store.finish(
            run_id, status=status, test=None, baselines=None, timing=dict(timing or {}), model_path=None, error=message
        )
    except Exception:
        log.exception("run %s: could not record that it %s (%s)", run_id, status, message)


def failure_message(exc: BaseException) -> str:
    """A FedlabError's own words; anything else named as an internal error."""
    if isinstance(exc, FedlabError):
        return one_line(str(exc)) or type(exc).__name__
    return one_line(f"internal error: {type(exc).__name__}: {exc}")


def one_line(message: str) -> str:
    line = " ".join(message.strip().split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 1] + "…"
