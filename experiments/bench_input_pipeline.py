"""Images per second that nucjax.data.pipeline.train_batches delivers, after warm-up.

  .venv/bin/python experiments/bench_input_pipeline.py \
      --data_dir=/tmp/nucjax_tfds --source=/work/shared/data/dsb2018 --steps=50

Reports the time to the first batch (decoding this process's shard of the training split,
which happens once per train_batches call), the same for a start far into training (resume
costs no more than a fresh start), then per-step wall times over --steps steps after
--warmup steps, as median and mean images/second. Nothing but the iterator runs, so this is
the ceiling the input pipeline puts on training speed on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.common import get_config  # noqa: E402
from nucjax.data import pipeline  # noqa: E402


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default="", help="TFDS data dir (config.data.data_dir)")
    parser.add_argument("--source", default="", help="DSB files (config.data.download_source)")
    parser.add_argument("--dataset", default="dsb2018", choices=("dsb2018", "synthetic"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--scale_jitter", type=float, default=0.0)
    parser.add_argument("--intensity_jitter", type=float, default=0.0)
    parser.add_argument("--resume_step", type=int, default=1_000_000)
    return parser.parse_args()


def _first_batch_seconds(config, batch_size: int, start_step: int) -> tuple[float, object]:
    start = time.perf_counter()
    batches = pipeline.train_batches(config, batch_size=batch_size, seed=0, start_step=start_step)
    next(batches)
    return time.perf_counter() - start, batches


def main() -> None:
    args = _parse()
    import tensorflow  # noqa: F401  (imported before the clocks start: ~10 s on a busy machine)

    config = get_config().data
    config.source = args.dataset
    config.data_dir = args.data_dir
    config.download_source = args.source
    config.crop_size = args.crop
    config.scale_jitter = args.scale_jitter
    config.intensity_jitter = args.intensity_jitter

    first, batches = _first_batch_seconds(config, args.batch_size, 0)
    print(f"time to first batch, start_step=0: {first:.2f} s")
    first, _ = _first_batch_seconds(config, args.batch_size, args.resume_step)
    print(f"time to first batch, start_step={args.resume_step}: {first:.2f} s")
    for _ in range(args.warmup):
        next(batches)
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        next(batches)
        seconds.append(time.perf_counter() - start)
    rates = [args.batch_size / s for s in seconds]
    total = args.batch_size * args.steps / sum(seconds)
    print(
        f"batch {args.batch_size}, crop {args.crop}, {args.steps} steps after {args.warmup} "
        f"warm-up, {os.cpu_count()} CPUs: median {statistics.median(rates):.1f} images/s "
        f"(median step {1000 * statistics.median(seconds):.1f} ms), "
        f"mean {total:.1f} images/s (mean step {1000 * statistics.mean(seconds):.1f} ms); "
        f"load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
