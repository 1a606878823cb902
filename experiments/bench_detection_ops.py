"""Timings of the heavier detection ops at realistic sizes.

Run from the repository root:
  .venv/bin/python experiments/bench_detection_ops.py            # CPU
Prints the median of 5 runs after compilation, one image unless a batch is named.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()  # rbg PRNG and CPU flags, as in training; before jax starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import mask_rcnn  # noqa: E402
from nucjax.detection import anchors, nms, proposals, roi_align, targets  # noqa: E402
from nucjax.models import fpn  # noqa: E402


def median_ms(fn, *args, runs=5):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def random_boxes(rng, n, extent, low=6.0, high=120.0):
    centre = rng.uniform(0, extent, (n, 2))
    size = np.exp(rng.uniform(np.log(low), np.log(high), (n, 2)))
    return np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)


def main():
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} cpus")
    for n, k in [(2000, 1000), (10000, 1000), (10000, 100)]:
        boxes = random_boxes(rng, n, 512)
        scores = rng.uniform(size=n).astype(np.float32)
        run = jax.jit(lambda b, s, k=k: nms.nms(b, s, jnp.ones(b.shape[0], bool), 0.7, k))
        print(f"nms N={n} max_output={k} iou 0.7: {median_ms(run, boxes, scores):.1f} ms")

    size, channels = 512, 256
    strides = (4, 8, 16, 32)
    features = [
        jnp.asarray(rng.normal(size=(size // s, size // s, channels)), jnp.float32) for s in strides
    ]
    for num, out in [(512, 7), (128, 14), (1000, 14)]:
        boxes = jnp.asarray(random_boxes(rng, num, size))
        forward = jax.jit(lambda f, b, o=out: roi_align.multilevel_roi_align(f, b, o, strides))
        line = f"multilevel_roi_align R={num} out={out} C={channels} {size}px P2-P5: "
        line += f"forward {median_ms(forward, features, boxes):.0f} ms"
        if num <= 512:
            loss = lambda f, b, o=out: jnp.sum(roi_align.multilevel_roi_align(f, b, o, strides))
            both = jax.jit(jax.value_and_grad(loss))
            line += f", forward+backward {median_ms(both, features, boxes):.0f} ms"
        print(line)

    m = mask_rcnn.get_config().model  # the paper's anchors and sampling sizes
    boxes_all, counts = anchors.multilevel_anchors(
        (size, size), fpn.level_strides(len(m.anchor_sizes)), m.anchor_sizes, m.aspect_ratios
    )
    logits = rng.normal(size=len(boxes_all)).astype(np.float32)
    deltas = (0.2 * rng.normal(size=(len(boxes_all), 4))).astype(np.float32)
    run = jax.jit(
        lambda a, s, d: proposals.generate_proposals(
            a, s, d, counts, (size, size), 2000, 1000, m.rpn_nms_threshold
        )
    )
    print(
        f"generate_proposals A={len(boxes_all)} pre 2000/level post 1000: "
        f"{median_ms(run, boxes_all, logits, deltas):.0f} ms"
    )
    gt = random_boxes(rng, 512, size, 6, 60)
    gt_valid = np.arange(512) < 300
    run = jax.jit(
        lambda key, a, g, v: targets.rpn_targets(
            key, a, g, v, m.rpn_samples, m.rpn_positive_fraction
        )
    )
    print(
        f"rpn_targets A={len(boxes_all)} G=512 (300 valid): "
        f"{median_ms(run, jax.random.key(0), boxes_all, gt, gt_valid):.0f} ms"
    )


if __name__ == "__main__":
    main()
