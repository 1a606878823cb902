"""Mask R-CNN training-step and inference time on synthetic nuclei, through nucjax's own step.

  python experiments/bench_mask_rcnn_step.py --config=configs/mask_rcnn.py --batch=2 --size=256
  python experiments/bench_mask_rcnn_step.py --config=configs/mask_rcnn.py:quick --batch=4 \
      --size=128

Like experiments/bench_train_step.py, but the labels are synthetic nuclei (nucjax.data.
synthetic, about 17 px across as at DSB's native scale) rather than random pixel ids, so the
matching, sampling and NMS loops see realistic ground truth. Runs on whatever devices JAX sees
(one CPU here). The first step (compilation) is reported separately; the median over the
remaining steps is the figure to record. --eval_batches also times inference (train=False).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()  # rbg PRNG and CPU flags, as in training

config_flags.DEFINE_config_file("config", None, "config file", lock_config=True)
flags.DEFINE_integer("batch", 2, "global batch")
flags.DEFINE_integer("size", 256, "square input size (a multiple of 32)")
flags.DEFINE_integer("steps", 5, "timed train steps after the compiling one")
flags.DEFINE_integer("eval_batches", 0, "timed inference batches after the compiling one")
FLAGS = flags.FLAGS


def synthetic_batch(batch: int, size: int):
    import numpy as np

    from nucjax.data.images import normalize_image
    from nucjax.data.synthetic import synthetic_example

    rng = np.random.default_rng(0)
    pairs = [synthetic_example(rng, size, radius=8.5) for _ in range(batch)]
    return {
        "image": np.stack([normalize_image(image) for image, _ in pairs]),
        "label": np.stack([label for _, label in pairs]).astype(np.int32),
        "valid": np.ones(batch, np.float32),
    }


def timed(fn, repeats: int) -> list[float]:
    import jax

    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return times


def report(what: str, times: list[float], batch: int) -> None:
    rest = times[1:]
    print(f"{what} compile+first: {times[0]:.2f} s")
    print(
        f"{what}: median {statistics.median(rest):.3f} s, min {min(rest):.3f} s, "
        f"max {max(rest):.3f} s over {len(rest)}; {batch / statistics.median(rest):.2f} images/s"
    )


def main(argv):
    del argv
    import jax

    from nucjax import models, optim, parallel, train

    config = FLAGS.config
    with config.unlocked():
        config.data.crop_size = FLAGS.size
    spec = models.build(config)
    mesh = parallel.make_mesh()
    tx = optim.make_optimizer(config.optim, 1000)
    state = train.init_state(spec, tx, config, mesh)
    step = train.make_train_step(spec, tx, mesh)
    host = synthetic_batch(FLAGS.batch, FLAGS.size)
    data = parallel.shard_batch(host, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    m = config.model
    print(
        f"model={m.name} backbone={m.backbone} depth={m.depth} width={m.width} "
        f"fpn={m.fpn_width} params={n_params:,} batch={FLAGS.batch} size={FLAGS.size} "
        f"nuclei/image={[int(x.max()) for x in host['label']]} "
        f"devices={mesh.devices.size} ({jax.devices()[0].platform})"
    )

    def train_step():
        nonlocal state
        state, sums = step(state, data)
        return sums

    report("train step", timed(train_step, FLAGS.steps), FLAGS.batch)
    if FLAGS.eval_batches:
        apply = jax.jit(lambda v, x: spec.module.apply(v, x, train=False))
        times = timed(lambda: apply(state.variables, host["image"]), FLAGS.eval_batches)
        report("inference", times, FLAGS.batch)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
