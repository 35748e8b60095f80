"""The order queued runs train in on a shared server: users in turn, each user's runs in the order queued.

Pure functions on hand-built queues (the job manager keeps the queue and calls them under its lock):

- fair_order: the waiting runs in the order they will start. A user's k-th waiting run gets turn
  served[user] + k, where served counts the user's runs started since the queue was last empty; runs go by
  turn, then by when they were queued. So 30 students who press Run at once start in the order they pressed,
  and one who queued three waits for everyone else's first before their second. Runs the admin moved to
  the front go first, the last one moved first.
- expected_starts: when each run in that order should start, from the running run's time left and the
  estimated duration of each run ahead (fedlab.runs.estimate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate


@dataclass(frozen=True)
class Waiting:
    """One queued run as the scheduler sees it."""

    run_id: str
    owner: str  # the owner key (a user, a browser session, or "" for the app's own demo runs)
    seq: int  # the order it was queued in
    front: int | None = None  # set when the admin moved it to the front: the order of those moves


def fair_order(waiting: Sequence[Waiting], served: Mapping[str, int]) -> list[Waiting]:
    """The runs in the order they will start (see the module docstring)."""
    moved = sorted((w for w in waiting if w.front is not None), key=lambda w: -w.front)
    turns: dict[str, int] = {}
    keyed = []
    for entry in sorted((w for w in waiting if w.front is None), key=lambda w: w.seq):
        k = turns.get(entry.owner, 0)
        turns[entry.owner] = k + 1
        keyed.append((served.get(entry.owner, 0) + k, entry.seq, entry))
    return moved + [entry for _, _, entry in sorted(keyed, key=lambda t: t[:2])]


def expected_starts(durations: Sequence[float], running_left: float) -> list[float]:
    """Seconds from now until each run in order starts: the running run's time left, then each one ahead's."""
    return list(accumulate(durations[:-1], initial=max(running_left, 0.0))) if durations else []
