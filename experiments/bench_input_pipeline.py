"""Images per second that each input path (config.data.pipeline) delivers, measured
interleaved: a block of steps of each path in turn, so both see the same machine load.

  .venv/bin/python experiments/bench_input_pipeline.py --data_dir=/tmp/nucjax_data \
      --source=/work/shared/data/dsb2018 --storage=compact --steps=30

Reports, per path, the time to the first batch (decoding this process's shard of the training
split, and for the device path its compilation), the same for a start far into training
(resume costs no more than a fresh start), then per-step wall times over --steps steps after
--warmup steps, in blocks of --block steps per path, as the median and mean over blocks of
images/second. Blocks, not single steps: tf.data keeps preparing batches in background
threads while the other path runs, so alternating single steps credits it with work done in
the other's time (measured: "0.8 ms" tf.data steps). A device batch counts as delivered when
it is ready on the device (block_until_ready). Nothing but the iterators runs, so this is the
ceiling each input path puts on training speed on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()

import jax  # noqa: E402

from configs.common import get_config  # noqa: E402
from nucjax.data import pipeline  # noqa: E402


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default="", help="config.data.data_dir")
    parser.add_argument("--source", default="", help="DSB files (config.data.download_source)")
    parser.add_argument("--storage", default="auto", choices=("auto", "tfds", "compact"))
    parser.add_argument("--dataset", default="dsb2018", choices=("dsb2018", "synthetic"))
    parser.add_argument("--pipelines", default="tfdata,device")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--block", type=int, default=10, help="steps per path per turn")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--scale_jitter", type=float, default=0.0)
    parser.add_argument("--intensity_jitter", type=float, default=0.0)
    parser.add_argument("--resume_step", type=int, default=1_000_000)
    return parser.parse_args()


def _next(batches):
    return jax.block_until_ready(next(batches))


def _first_batch_seconds(config, batch_size: int, start_step: int) -> tuple[float, object]:
    start = time.perf_counter()
    batches = pipeline.train_batches(config, batch_size=batch_size, seed=0, start_step=start_step)
    _next(batches)
    return time.perf_counter() - start, batches


def main() -> None:
    args = _parse()
    names = args.pipelines.split(",")
    if "tfdata" in names:
        import tensorflow  # noqa: F401  (imported before the clocks start: ~10 s when busy)

    streams, seconds = {}, {}
    for name in names:
        config = get_config().data
        config.source = args.dataset
        config.data_dir = args.data_dir
        config.download_source = args.source
        config.storage = args.storage
        config.pipeline = name
        config.crop_size = args.crop
        config.scale_jitter = args.scale_jitter
        config.intensity_jitter = args.intensity_jitter
        first, streams[name] = _first_batch_seconds(config, args.batch_size, 0)
        again, _ = _first_batch_seconds(config, args.batch_size, args.resume_step)
        print(
            f"{name}: time to first batch {first:.2f} s at start_step=0, "
            f"{again:.2f} s at start_step={args.resume_step}"
        )
        for _ in range(args.warmup):
            _next(streams[name])
        seconds[name] = []
    for _ in range(max(args.steps // args.block, 1)):
        for name in names:
            start = time.perf_counter()
            for _ in range(args.block):
                _next(streams[name])
            seconds[name].append(time.perf_counter() - start)
    for name in names:
        rates = [args.batch_size * args.block / s for s in seconds[name]]
        steps = args.block * len(seconds[name])
        total = args.batch_size * steps / sum(seconds[name])
        print(
            f"{name}: batch {args.batch_size}, crop {args.crop}, {steps} steps in blocks of "
            f"{args.block} after {args.warmup} warm-up, {os.cpu_count()} CPUs, "
            f"{jax.devices()[0].platform}: median block {statistics.median(rates):.1f} "
            f"images/s, mean {total:.1f} images/s ({1000 * sum(seconds[name]) / steps:.1f} ms "
            "per step)"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
