"""A training-time budget (config.train.max_minutes) that holds across resumed runs.

Training seconds are wall-clock seconds inside the training loop: the first step's compilation
counts (a run really spends it), evaluation does not (it is not training). The trainer saves
the count in each checkpoint's metadata (`train_seconds`), so a resumed run starts from what
the restored checkpoint had spent and stops at the same total; seconds spent after the last
checkpoint of an interrupted run are dropped with the steps they trained, which the resumed
run trains again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import jax


class TrainingClock:
    """Training seconds so far: `spent_s` from earlier runs plus this run's running time.

    limit_s: the budget in seconds; 0 = none. clock: seconds from any origin (tests pass a
    fake one).
    """

    def __init__(
        self, spent_s: float = 0.0, limit_s: float = 0.0, clock: Callable[[], float] = None
    ):
        self._spent = float(spent_s)
        self.limit_s = float(limit_s)
        self._clock = clock or time.monotonic
        self._since: float | None = None

    def start(self) -> None:
        if self._since is None:
            self._since = self._clock()

    def stop(self) -> None:
        if self._since is not None:
            self._spent += self._clock() - self._since
            self._since = None

    def spent(self) -> float:
        running = self._clock() - self._since if self._since is not None else 0.0
        return self._spent + running

    def exhausted(self) -> bool:
        """True once a budget is set and spent. On several hosts every process must agree:
        process 0's answer is broadcast (one small collective, only when a budget is set)."""
        if self.limit_s <= 0:
            return False
        spent = self.spent() >= self.limit_s
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            spent = bool(multihost_utils.broadcast_one_to_all(spent))
        return spent

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside this block (evaluation) is not training time."""
        running = self._since is not None
        self.stop()
        try:
            yield
        finally:
            if running:
                self.start()


__all__ = ["TrainingClock"]
