"""Early stopping on the validation loss: which round to keep, and whether to stop training."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopDecision:
    best_round: int  # 1-based round with the lowest validation loss so far (the first of equals); 0 = none yet
    stop: bool  # `patience` rounds have passed without a lower validation loss


def early_stopping(val_losses: Sequence[float], *, patience: int) -> StopDecision:
    """The decision after the rounds whose validation losses are given, in order.

    A round is kept only when its loss is strictly below every earlier one (a NaN loss never is).
    """
    best_round, best_loss = 0, math.inf
    for number, loss in enumerate(val_losses, 1):
        if loss < best_loss:
            best_round, best_loss = number, loss
    return StopDecision(best_round=best_round, stop=len(val_losses) - best_round >= patience)
