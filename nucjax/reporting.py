"""Where training reports go: a JSON-lines file, TensorBoard event files, a console bar."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

from absl import logging


class MetricWriter:
    """Appends `{"step": s, "split": name, **scalars}` to workdir/metrics.jsonl and writes the
    same scalars as TensorBoard summaries `name/key` under workdir/tensorboard.

    Only process 0 writes. TensorBoard needs TensorFlow; without it only JSON lines are written.
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        try:
            import tensorflow as tf

            self._tf = tf
            self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
        except ImportError:
            logging.warning("TensorFlow is not installed: no TensorBoard files, JSON lines only")

    def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "split": split, **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            with self._tb.as_default(step=int(step)):
                for k, v in scalars.items():
                    self._tf.summary.scalar(f"{split}/{k}", float(v))
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class ProgressBar:
    """A console progress bar with step rate and ETA.

    On a terminal it redraws one line; in a log file it prints one line per `update`.
    """

    def __init__(self, total: int, initial: int = 0, stream=None, width: int = 24):
        self.total, self.start_step, self.width = total, initial, width
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.t0 = None

    def update(self, step: int, scalars: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        if self.t0 is None:
            # The first update follows compilation: rates count from here.
            self.t0, self.start_step = now, step
        done = step - self.start_step
        rate = done / (now - self.t0) if now > self.t0 and done else float("nan")
        eta = (self.total - step) / rate if rate == rate and rate > 0 else float("nan")
        filled = int(self.width * step / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        extra = " ".join(f"{k} {v:.4g}" for k, v in (scalars or {}).items())
        line = (
            f"step {step}/{self.total} [{bar}] {rate:.2f} step/s ETA {format_duration(eta)} {extra}"
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            if step >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
