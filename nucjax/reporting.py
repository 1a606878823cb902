"""Where reports go: a JSON-lines file, TensorBoard event files, and the console progress bar."""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
import tqdm
from absl import logging

from nucjax import outputs


def drop_rows_after(path: str, step: int) -> int:
    """Rewrite the JSON-lines file `path` (atomically) without its rows of steps past `step`,
    and without a last line a kill cut short. Returns how many rows went; 0 if no file."""
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a row half-written when the process was killed
        if row.get("step", 0) <= step:
            kept.append(line)
    if len(kept) < len(lines):
        outputs.write_text(path, "".join(f"{line}\n" for line in kept))
    return len(lines) - len(kept)


class MetricWriter:
    """Appends `{"step": s, "split": name, **scalars}` to workdir/metrics.jsonl and writes the
    same scalars as TensorBoard summaries `name/key` under workdir/tensorboard (and images,
    write_images).

    start_step: the step training starts after (the restored checkpoint's, 0 for a fresh
    run). Rows of later steps, written by a run that stopped after its last checkpoint, are
    dropped first: those steps are trained again, and each step has one row.
    Only process 0 writes. TensorBoard needs TensorFlow; without it only JSON lines are written.
    """

    def __init__(self, workdir: str, enabled: bool = True, start_step: int = 0):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        if dropped := drop_rows_after(self.path, start_step):
            logging.info("dropped %d rows past step %d from %s", dropped, start_step, self.path)
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

    def write_images(self, step: int, name: str, images: list[np.ndarray]) -> None:
        """TensorBoard image summaries `name/0`, `name/1`, ... of (H, W, 3) uint8 images
        (PNG-encoded, so read back exactly). Not in metrics.jsonl; nothing without TensorBoard."""
        if self._tb is None or not images:
            return
        with self._tb.as_default(step=int(step)):
            for i, image in enumerate(images):
                self._tf.summary.image(f"{name}/{i}", np.asarray(image, np.uint8)[None])
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
