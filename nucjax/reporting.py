"""Where reports go: a JSON-lines file, TensorBoard event files, and the console progress bar."""

from __future__ import annotations

import json
import os
import sys

import jax
import tqdm
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
            from nucjax.runtime import import_tensorflow

            self._tf = tf = import_tensorflow()
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


def progress(total: int, what: str, unit: str = "it", initial: int = 0) -> tqdm.tqdm:
    """The one progress display of nucjax (training steps, evaluated or predicted images).

    A redrawn line with rate and ETA on a terminal; in a log file (no TTY) a line every 30 s
    at most, so long runs keep readable logs. Only process 0 shows it: the others run the same
    loop in step.
    """
    tty = sys.stderr.isatty()
    return tqdm.tqdm(
        total=total,
        disable=jax.process_index() != 0,
        initial=initial,
        desc=what,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=tty,
        mininterval=0.5 if tty else 30.0,
        ascii=not tty,
    )
