"""A server-wide memory budget for loaded check-in frames, shared by every browser session of the dashboard.

A frame stays loaded while someone uses it; one nobody has used for `idle_seconds` is dropped (the file stays,
and is read again when next needed). A new frame that does not fit beside the ones in use is refused with one
line naming the budget and the setting that raises it, FEDLAB_DATA_MEMORY_MB; nothing stored is touched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from fedlab.config import positive_int_from_env
from fedlab.errors import DataError

BUDGET_VARIABLE = "FEDLAB_DATA_MEMORY_MB"
IDLE_VARIABLE = "FEDLAB_DATA_IDLE_MINUTES"
DEFAULT_BUDGET_MB = 2048
DEFAULT_IDLE_MINUTES = 15


@dataclass(frozen=True)
class Loaded:
    key: Hashable
    nbytes: int
    last_used: float


def idle_keys(entries: Sequence[Loaded], now: float, idle_seconds: float) -> list[Hashable]:
    """The entries nobody used for `idle_seconds`: to drop."""
    return [entry.key for entry in entries if now - entry.last_used >= idle_seconds]


def refusal(in_use: int, nbytes: int, budget: int) -> str | None:
    """One line when `nbytes` more do not fit beside `in_use` bytes within `budget`; None when they fit."""
    if in_use + nbytes <= budget:
        return None
    return (
        f"Not loaded: this data takes {_mb(nbytes)} in memory and the data others use takes {_mb(in_use)}, past "
        f"the server's {_mb(budget)} budget for loaded data ({BUDGET_VARIABLE} raises it); try again later, or "
        "load a smaller file."
    )


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.0f} MB"


def budget_from_env() -> int:
    """FEDLAB_DATA_MEMORY_MB (default 2048) in bytes."""
    return positive_int_from_env(BUDGET_VARIABLE, DEFAULT_BUDGET_MB) * 2**20


def idle_seconds_from_env() -> float:
    """FEDLAB_DATA_IDLE_MINUTES (default 15) in seconds."""
    return positive_int_from_env(IDLE_VARIABLE, DEFAULT_IDLE_MINUTES) * 60.0


class FrameBudget:
    """Loaded values (check-in frames) by key, within a byte budget; see the module docstring."""

    def __init__(self, budget: int, idle_seconds: float, *, clock: Callable[[], float] = time.monotonic):
        self.budget = int(budget)
        self.idle_seconds = float(idle_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[Hashable, Any] = {}
        self._entries: dict[Hashable, Loaded] = {}

    def get(self, key: Hashable, load: Callable[[], Any], size: Callable[[Any], int]) -> Any:
        """The value for `key`, loading it (outside the lock) when absent. DataError when it does not fit."""
        with self._lock:
            self._drop_idle()
            if key in self._values:
                self._touch(key)
                return self._values[key]
        value = load()
        nbytes = int(size(value))
        with self._lock:
            if key in self._values:  # another session loaded it meanwhile
                self._touch(key)
                return self._values[key]
            self._drop_idle()
            message = refusal(self.in_use(), nbytes, self.budget)
            if message is not None:
                raise DataError(message)
            self._values[key] = value
            self._entries[key] = Loaded(key, nbytes, self._clock())
            return value

    def in_use(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._entries.clear()

    def _touch(self, key: Hashable) -> None:
        entry = self._entries[key]
        self._entries[key] = Loaded(key, entry.nbytes, self._clock())

    def _drop_idle(self) -> None:
        for key in idle_keys(list(self._entries.values()), self._clock(), self.idle_seconds):
            del self._values[key], self._entries[key]
