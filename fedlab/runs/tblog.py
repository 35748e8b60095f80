"""TensorBoard event files of one run, laid out as the study wrote them.

log_dir/train holds `train/loss` and `train/accuracy`, log_dir/validation holds `validation/loss` and
`validation/accuracy`, one point per round (step = round number); federated rounds add the megabytes sent
(`communication/...`) and, in a run with a defence, the updates it clipped and zeroed (`defense/clipped`,
`defense/zeroed`). Point TensorBoard at the parent of several runs' folders (`tensorboard --logdir
runs/tensorboard`) to overlay them.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime
from pathlib import Path

from fedlab.records import RoundRecord

log = logging.getLogger(__name__)

TRAIN = "train"
VALIDATION = "validation"


def log_dir_for(root: str | os.PathLike, run_id: str) -> Path:
    """One folder per run under `root`, so TensorBoard lists runs by id."""
    return Path(root) / run_id


def named_log_dir(root: str | os.PathLike, name: str, *, now: datetime | None = None) -> Path:
    """root/<name>-<YYYYmmdd-HHMMSS> for a run without an id (the CLI); a new folder even within one second."""
    stem = re.sub(r"[^\w.\-]+", "_", name).strip("_.")  # a name is never a path
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / (f"{stem}-{stamp}" if stem else stamp)
    path, count = base, 1
    while path.exists():
        count += 1
        path = base.with_name(f"{base.name}-{count}")
    return path


class TensorBoardLog:
    """Writes each RoundRecord as it arrives; flushes every round so TensorBoard shows it live."""

    def __init__(self, log_dir: str | os.PathLike):
        # TensorBoard's own event writer: the same files as tf.summary, without loading TensorFlow.
        from tensorboard.summary import Writer

        self.log_dir = Path(log_dir)
        self._writers = {split: Writer(str(self.log_dir / split)) for split in (TRAIN, VALIDATION)}
        self._rounds: list[int] = []  # rounds written so far
        self._defended = False  # a defence has clipped or zeroed an update in this run

    def write(self, record: RoundRecord) -> None:
        if self._writers is None:
            raise ValueError(f"the TensorBoard log in {self.log_dir} is closed")
        values = {TRAIN: (record.train_loss, record.train_accuracy), VALIDATION: (record.val_loss, record.val_accuracy)}
        for split, (loss, accuracy) in values.items():
            writer = self._writers[split]
            writer.add_scalar(f"{split}/loss", loss, record.round)
            writer.add_scalar(f"{split}/accuracy", accuracy, record.round)
            if split == TRAIN and (record.bytes_down or record.bytes_up):  # megabytes sent (federated rounds)
                writer.add_scalar("communication/mb_down", record.bytes_down / 1e6, record.round)
                writer.add_scalar("communication/mb_up", record.bytes_up / 1e6, record.round)
            if split == TRAIN:
                self._write_defence(writer, record)
            writer.flush()
        self._rounds.append(record.round)

    def _write_defence(self, writer, record: RoundRecord) -> None:
        """Clipped and zeroed updates, from the first round a defence did either on, with zeros for the rounds
        before it, so the curves start at round 1 and runs without a defence get none."""
        if not self._defended and not (record.clipped or record.zeroed):
            return
        earlier = [] if self._defended else self._rounds
        self._defended = True
        for step, clipped, zeroed in [*((r, 0, 0) for r in earlier), (record.round, record.clipped, record.zeroed)]:
            writer.add_scalar("defense/clipped", clipped, step)
            writer.add_scalar("defense/zeroed", zeroed, step)

    def close(self) -> None:
        """Flushes and closes both files; closing twice is harmless."""
        if self._writers is None:
            return
        for writer in self._writers.values():
            writer.close()
        self._writers = None

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class BestEffortLog:
    """A TensorBoardLog for a training loop: a failure to write is logged once and never reaches the run.

    The files are made with the first round, so a run that ends before one leaves no empty folder.
    After a failure the rest of the run is not logged; `error` says why.
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = Path(log_dir)
        self.error: str | None = None
        self._log: TensorBoardLog | None = None

    def write(self, record: RoundRecord) -> None:
        if self.error is not None:
            return
        try:
            if self._log is None:
                self._log = TensorBoardLog(self.log_dir)
            self._log.write(record)
        except Exception as exc:
            self.error = " ".join(f"{type(exc).__name__}: {exc}".split())
            log.warning(
                "could not write the TensorBoard log in %s (%s); training goes on without it", self.log_dir, self.error
            )
            self.close()

    def close(self) -> None:
        current, self._log = self._log, None
        if current is None:
            return
        try:
            current.close()
        except Exception as exc:
            log.warning("could not close the TensorBoard log in %s: %s", self.log_dir, exc)
