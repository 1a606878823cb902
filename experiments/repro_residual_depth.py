"""Minimal reproduction of ResNet-152's outlier step time: a stage of N identical residual
blocks, differentiated, in JAX (XLA:CPU) and TensorFlow (oneDNN), interleaved.

  python experiments/repro_residual_depth.py                     # N = 3, 6, 12, 24, 36
  python experiments/repro_residual_depth.py --depths=6,36 --rounds=5 --channels=256

The stage is plain JAX (no nucjax module): each block is ResNet's bottleneck (1x1 conv to C/4,
batch norm, ReLU; 3x3 conv, batch norm, ReLU; 1x1 conv back to C, batch norm; plus the input;
ReLU), batch norm with the batch's statistics as in training, the loss sum(y * y) of the
stage's output, its gradient with respect to the input and every weight. ResNet-152's stage 4
is 36 such blocks (1024 channels at 16 x 16 for a 256 x 256 input), ResNet-50's 6. If the work
per block did not depend on how many blocks come before it, time / N would stay flat as N
grows; one JSON line per depth gives both sides' median seconds per block, their ratio, and the
compiled JAX step's largest fusion (operands of its biggest fused computation) and number of
fused computations. A third side, "walls", is the same JAX stage with
nucjax.models.layers.fusion_wall on every block's output (what nucjax's ResNet does on the CPU:
config.model.fusion_walls).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"  # TF's default kernels (runtime.configure: off)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments.nucjax_steps import fusion_counts  # noqa: E402
from nucjax.models.layers import fusion_wall  # noqa: E402

flags.DEFINE_list("depths", ["3", "6", "12", "24", "36"], "blocks per stage")
flags.DEFINE_integer("channels", 256, "stage width C (bottleneck C / 4)")
flags.DEFINE_integer("size", 16, "spatial size of the stage's activations")
flags.DEFINE_integer("batch", 10, "batch")
flags.DEFINE_integer("rounds", 5, "timed rounds (each: one call per side per depth)")
FLAGS = flags.FLAGS

EPS = 1e-5


def block_weights(rng: np.random.Generator, c: int) -> list[np.ndarray]:
    """One bottleneck's weights: three HWIO kernels and (gamma, beta) for each batch norm."""
    b = c // 4
    shapes = [(1, 1, c, b), (3, 3, b, b), (1, 1, b, c)]
    weights = []
    for shape in shapes:
        fan_in = np.prod(shape[:3])
        weights.append((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))
        weights += [np.ones(shape[-1], np.float32), np.zeros(shape[-1], np.float32)]
    return weights


def jax_stage(x, weights, walls: bool = False):
    """x (B, H, W, C) through len(weights) // 9 bottlenecks -> (B, H, W, C); walls: a
    fusion_wall on every block's output."""

    def conv_bn(h, k, gamma, beta):
        h = jax.lax.conv_general_dilated(
            h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        mean = jnp.mean(h, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(h - mean), axis=(0, 1, 2))
        return (h - mean) * jax.lax.rsqrt(var + EPS) * gamma + beta

    for i in range(0, len(weights), 9):
        k1, g1, b1, k2, g2, b2, k3, g3, b3 = weights[i : i + 9]
        h = jax.nn.relu(conv_bn(x, k1, g1, b1))
        h = jax.nn.relu(conv_bn(h, k2, g2, b2))
        x = jax.nn.relu(conv_bn(h, k3, g3, b3) + x)
        x = fusion_wall(x) if walls else x
    return x


def tf_stage(tf, x, weights):
    """The same stage in TensorFlow."""

    def conv_bn(h, k, gamma, beta):
        h = tf.nn.conv2d(h, k, 1, "SAME")
        mean, var = tf.nn.moments(h, axes=[0, 1, 2])
        return tf.nn.batch_normalization(h, mean, var, beta, gamma, EPS)

    for i in range(0, len(weights), 9):
        k1, g1, b1, k2, g2, b2, k3, g3, b3 = weights[i : i + 9]
        h = tf.nn.relu(conv_bn(x, k1, g1, b1))
        h = tf.nn.relu(conv_bn(h, k2, g2, b2))
        x = tf.nn.relu(conv_bn(h, k3, g3, b3) + x)
    return x


def jax_side(x: np.ndarray, weights: list[np.ndarray], walls: bool):
    """(call, (fusions, largest fusion)) of the compiled JAX gradient step."""

    def loss(x, weights):
        y = jax_stage(x, weights, walls)
        return jnp.sum(y * y)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jx, jw = jnp.asarray(x), [jnp.asarray(w) for w in weights]
    compiled = step.lower(jx, jw).compile()

    def call():
        jax.block_until_ready(compiled(jx, jw))

    return call, fusion_counts(compiled.as_text())


def sides(depth: int, x: np.ndarray, rng: np.random.Generator) -> dict:
    """{side: (call, (fusions, largest fusion) or None)} for a stage of `depth` blocks."""
    import tensorflow as tf

    weights = [w for _ in range(depth) for w in block_weights(rng, x.shape[-1])]
    tx, tw = tf.constant(x), [tf.Variable(w) for w in weights]

    @tf.function
    def tf_step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf_stage(tf, x, tw)
            value = tf.reduce_sum(y * y)
        return tape.gradient(value, [x] + tw)

    def tf_call():
        [g.numpy() for g in tf_step(tx)]

    built = {"jax": jax_side(x, weights, False), "walls": jax_side(x, weights, True)}
    built["tf"] = (tf_call, None)
    for call, _ in built.values():
        call()  # compile / trace
    return built


def main(_):
    rng = np.random.default_rng(0)
    c, s, b = FLAGS.channels, FLAGS.size, FLAGS.batch
    x = rng.standard_normal((b, s, s, c)).astype(np.float32)
    depths = [int(d) for d in FLAGS.depths]
    built = {d: sides(d, x, rng) for d in depths}
    times = {(d, side): [] for d in depths for side in built[depths[0]]}
    for _ in range(FLAGS.rounds):
        for d in depths:
            for side, (call, _) in built[d].items():
                t0 = time.perf_counter()
                call()
                times[d, side].append(time.perf_counter() - t0)
    for d in depths:
        median = {side: statistics.median(times[d, side]) for side in built[d]}
        line = {"blocks": d, "shape": [b, s, s, c]}
        for side in ("jax", "walls", "tf"):
            line[f"{side}_ms_per_block"] = round(1e3 * median[side] / d, 2)
        line["jax_over_tf"] = round(median["jax"] / median["tf"], 2)
        line["walls_over_tf"] = round(median["walls"] / median["tf"], 2)
        for side in ("jax", "walls"):
            fusions, largest = built[d][side][1]
            line[f"{side}_fusions"], line[f"{side}_largest_fusion_operands"] = fusions, largest
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    app.run(main)
