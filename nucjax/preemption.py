"""Stopping a training run cleanly on SIGTERM or SIGINT.

Cluster schedulers and preemptible VMs send SIGTERM and allow a grace period before SIGKILL;
Ctrl-C sends SIGINT. Without a handler either one kills the run and loses every step since
the last checkpoint. While `stop_signals()` is active, the first such signal only sets a flag;
the trainer polls it after each step, finishes that step, writes a checkpoint at it, waits for
the write and raises `Preempted`. `python -m nucjax.main` turns that into one line and exit
code EXIT_CODE (3), so a job script can tell "preempted: run again" from success (0) and
failure (1). A second signal while the first is handled goes to the handler that was there
before (by default: die at once, or KeyboardInterrupt), for a user who will not wait.

The handlers are process-wide, so they are installed only for the duration of the training
loop and the previous ones restored after: importing or calling nucjax leaves none behind.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from absl import logging

EXIT_CODE = 3
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped at a signal after `step`, with a checkpoint saved at that step."""

    def __init__(self, step: int, signum: int, checkpoint_dir: str):
        self.step, self.signum, self.checkpoint_dir = step, signum, checkpoint_dir
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint saved in "
            f"{checkpoint_dir}/{step}. Run the same command again to resume."
        )


class StopRequest:
    """signum: the first stop signal received while installed, or None."""

    signum: int | None = None


def _restore(previous: dict) -> None:
    for signum, handler in previous.items():
        # getsignal gives None for a handler set outside Python; SIG_DFL is the best we can do.
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def stop_signals(signals=SIGNALS) -> Iterator[StopRequest]:
    """Catch `signals` into the StopRequest it yields; restore the previous handlers on exit.

    Signals the process ignores (SIG_IGN, e.g. under nohup) stay ignored. Outside the main
    thread Python cannot install handlers: nothing is caught and the request stays empty.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in signals}
    previous = {s: h for s, h in previous.items() if h is not signal.SIG_IGN}

    def handler(signum, frame):
        if request.signum is not None:
            _restore(previous)
            prior = previous[signum]
            if callable(prior):
                prior(signum, frame)
            else:
                signal.raise_signal(signum)
            return
        request.signum = signum
        logging.warning(
            "%s received: finishing this step, then saving a checkpoint and stopping "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )

    for signum in previous:
        signal.signal(signum, handler)
    try:
        yield request
    finally:
        _restore(previous)
