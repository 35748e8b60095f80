"""TensorBoard event files of one run, laid out as the study wrote them.

log_dir/train holds `train/loss` and `train/accuracy`, log_dir/validation holds `validation/loss` and
`validation/accuracy`, one point per round (step = round number). Point TensorBoard at the parent
of several runs' folders (`tensorboard --logdir runs/tensorboard`) to overlay them.
"""
from __future__ import annotations

import os
from pathlib import Path

from fedlab.records import RoundRecord

TRAIN = "train"
VALIDATION = "validation"


def log_dir_for(root: str | os.PathLike, run_id: str) -> Path:
    """One folder per run under `root`, so TensorBoard lists runs by id."""
    return Path(root) / run_id


class TensorBoardLog:
    """Writes each RoundRecord as it arrives; flushes every round so TensorBoard shows it live."""

    def __init__(self, log_dir: str | os.PathLike):
        import tensorflow as tf  # only runs that log pay for the import

        self.log_dir = Path(log_dir)
        self._tf = tf
        self._writers = {split: tf.summary.create_file_writer(str(self.log_dir / split))
                         for split in (TRAIN, VALIDATION)}

    def write(self, record: RoundRecord) -> None:
        if self._writers is None:
            raise ValueError(f"the TensorBoard log in {self.log_dir} is closed")
        values = {TRAIN: (record.train_loss, record.train_accuracy),
                  VALIDATION: (record.val_loss, record.val_accuracy)}
        for split, (loss, accuracy) in values.items():
            writer = self._writers[split]
            with writer.as_default():
                self._tf.summary.scalar(f"{split}/loss", loss, step=record.round)
                self._tf.summary.scalar(f"{split}/accuracy", accuracy, step=record.round)
            writer.flush()

    def close(self) -> None:
        """Flushes and closes both files; closing twice is harmless."""
        if self._writers is None:
            return
        for writer in self._writers.values():
            writer.close()
        self._writers = None

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
