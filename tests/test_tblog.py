"""TensorBoard logs: each round's scalars land in the train and validation event files."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from pathlib import Path

import pytest
from tensorboard.util.tensor_util import make_ndarray  # noqa: E402

from fedlab.records import RoundRecord
from fedlab.runs.tblog import BestEffortLog, TensorBoardLog, log_dir_for, named_log_dir

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def make_round(number: int) -> RoundRecord:
    return RoundRecord(
        round=number,
        train_loss=2.0 / number,
        train_accuracy=0.1 * number,
        val_loss=2.5 / number,
        val_accuracy=0.09 * number,
        clients=5,
        seconds=0.25,
    )


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of one split's event files (scalars are stored as tensors)."""
    accumulator = event_accumulator.EventAccumulator(str(folder))
    accumulator.Reload()
    return {
        tag: [(event.step, float(make_ndarray(event.tensor_proto))) for event in accumulator.Tensors(tag)]
        for tag in accumulator.Tags()["tensors"]
    }


@pytest.fixture
def logged(tmp_path: Path) -> Path:
    with TensorBoardLog(tmp_path / "run1") as log:
        for number in (1, 2, 3):
            log.write(make_round(number))
    return tmp_path / "run1"


def test_train_folder_holds_train_loss_and_accuracy_per_round(logged: Path):
    scalars = read_scalars(logged / "train")
    assert set(scalars) == {"train/loss", "train/accuracy"}
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
    assert [value for _, value in scalars["train/loss"]] == pytest.approx([2.0, 1.0, 2.0 / 3])
    assert [value for _, value in scalars["train/accuracy"]] == pytest.approx([0.1, 0.2, 0.3])


def test_validation_folder_holds_validation_scalars_only(logged: Path):
    scalars = read_scalars(logged / "validation")
    assert set(scalars) == {"validation/loss", "validation/accuracy"}
    assert [value for _, value in scalars["validation/loss"]] == pytest.approx([2.5, 1.25, 2.5 / 3])
    assert [step for step, _ in scalars["validation/accuracy"]] == [1, 2, 3]


def test_each_round_is_readable_before_close(tmp_path: Path):
    log = TensorBoardLog(tmp_path)
    try:
        log.write(make_round(1))
        assert read_scalars(tmp_path / "validation")["validation/accuracy"] == [(1, pytest.approx(0.09))]
    finally:
        log.close()


def test_nan_loss_is_written_not_dropped(tmp_path: Path):
    with TensorBoardLog(tmp_path) as log:
        log.write(
            RoundRecord(
                round=1, train_loss=math.nan, train_accuracy=0.0, val_loss=1.0, val_accuracy=0.5, clients=1, seconds=0.1
            )
        )
    ((step, value),) = read_scalars(tmp_path / "train")["train/loss"]
    assert step == 1 and math.isnan(value)


def test_write_after_close_raises(tmp_path: Path):
    log = TensorBoardLog(tmp_path)
    log.close()
    log.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        log.write(make_round(1))


def test_log_dir_for_puts_each_run_in_its_own_folder(tmp_path: Path):
    assert log_dir_for(tmp_path, "abc123") == tmp_path / "abc123"


def test_named_log_dir_is_name_then_time_and_never_an_existing_folder(tmp_path: Path):
    when = datetime(2024, 5, 6, 7, 8, 9)
    first = named_log_dir(tmp_path, "central", now=when)
    assert first == tmp_path / "central-20240506-070809"
    first.mkdir()
    assert named_log_dir(tmp_path, "central", now=when) == tmp_path / "central-20240506-070809-2"


def test_named_log_dir_keeps_the_name_inside_root(tmp_path: Path):
    when = datetime(2024, 5, 6, 7, 8, 9)
    assert named_log_dir(tmp_path, "../a/b c", now=when) == tmp_path / "a_b_c-20240506-070809"
    assert named_log_dir(tmp_path, "", now=when) == tmp_path / "20240506-070809"


def test_best_effort_log_makes_its_folder_with_the_first_round(tmp_path: Path):
    board = BestEffortLog(tmp_path / "run")
    assert not (tmp_path / "run").exists()
    board.write(make_round(1))
    board.write(make_round(2))
    board.close()
    assert board.error is None
    assert [step for step, _ in read_scalars(tmp_path / "run" / "validation")["validation/loss"]] == [1, 2]


def test_best_effort_log_reports_a_failure_once_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    board = BestEffortLog(blocker / "run")
    with caplog.at_level(logging.WARNING, logger="fedlab.runs.tblog"):
        for number in (1, 2, 3):
            board.write(make_round(number))
        board.close()
    assert "not a directory" in board.error
    assert len(caplog.records) == 1 and str(blocker / "run") in caplog.records[0].getMessage()
