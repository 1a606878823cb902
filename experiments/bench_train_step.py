"""Median training-step time of a model after compilation, through nucjax's own train step.

  python experiments/bench_train_step.py --config=configs/unet.py --batch=16 --size=256
  python experiments/bench_train_step.py --config=configs/unet.py:quick --steps=20

Runs on whatever devices JAX sees (one CPU here). The first step (compilation) is reported
separately; the median over the remaining steps is the figure to record.
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
flags.DEFINE_integer("batch", 0, "global batch; 0 = config.train.batch_size")
flags.DEFINE_integer("size", 0, "square input size; 0 = config.data.crop_size")
flags.DEFINE_integer("steps", 10, "timed steps after the compiling one")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax
    import numpy as np

    from nucjax import models, optim, parallel, train

    config = FLAGS.config
    batch = FLAGS.batch or config.train.batch_size
    size = FLAGS.size or config.data.crop_size
    with config.unlocked():
        config.data.crop_size = size
    spec = models.build(config)
    mesh = parallel.make_mesh()
    tx = optim.make_optimizer(config.optim, 1000)
    state = train.init_state(spec, tx, config, mesh)
    step = train.make_train_step(spec, tx, mesh)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, (batch, size, size)).astype(np.int32)
    host = {
        "image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
        "label": label,
        "valid": np.ones(batch, np.float32),
    }
    data = parallel.shard_batch(host, mesh)
    times = []
    for _ in range(FLAGS.steps + 1):
        t = time.perf_counter()
        state, sums = step(state, data)
        jax.block_until_ready(sums)
        times.append(time.perf_counter() - t)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    print(
        f"model={config.model.name} params={n_params:,} batch={batch} size={size} "
        f"devices={mesh.devices.size} ({jax.devices()[0].platform})"
    )
    print(f"compile+first step: {times[0]:.2f} s")
    print(
        f"step: median {statistics.median(times[1:]):.3f} s, min {min(times[1:]):.3f} s, "
        f"max {max(times[1:]):.3f} s over {len(times) - 1} steps; "
        f"{batch / statistics.median(times[1:]):.1f} images/s"
    )


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
