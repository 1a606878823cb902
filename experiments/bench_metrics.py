"""Time nucjax.metrics.evaluate_instances on a DSB-sized synthetic set.

  python experiments/bench_metrics.py [--images 65] [--height 1040] [--width 1388] [--nuclei 375]

The DSB 2018 stage-1 set's largest images are 1040 x 1388 with up to 375 nuclei; a validation
split is about 65 images. Truth: random discs; prediction: the truth shifted by a pixel or two,
with a tenth of the nuclei dropped, and 50 random specks added per image.
"""

import argparse
import time

import numpy as np

from nucjax import metrics


def random_discs(rng, height, width, count, radius=(5, 20)):
    """(height, width) int32 labels of `count` random discs (later discs on top)."""
    label = np.zeros((height, width), np.int32)
    for i in range(1, count + 1):
        r = int(rng.integers(*radius))
        cy, cx = int(rng.integers(r, height - r)), int(rng.integers(r, width - r))
        yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
        window = label[cy - r : cy + r + 1, cx - r : cx + r + 1]
        window[yy**2 + xx**2 <= r * r] = i
    return label


def perturbed(rng, truth, specks=50):
    pred = np.roll(truth, tuple(rng.integers(-2, 3, 2)), axis=(0, 1)) * 3  # other ids
    dropped = rng.choice(truth.max() + 1, truth.max() // 10, replace=False) * 3
    pred[np.isin(pred, dropped)] = 0
    ys, xs = (
        rng.integers(0, truth.shape[0] - 3, specks),
        rng.integers(0, truth.shape[1] - 3, specks),
    )
    for k, (y, x) in enumerate(zip(ys, xs, strict=True)):
        pred[y : y + 3, x : x + 3] = 10**6 + k
    return pred


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=65)
    parser.add_argument("--height", type=int, default=1040)
    parser.add_argument("--width", type=int, default=1388)
    parser.add_argument("--nuclei", type=int, default=375)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    truth = [random_discs(rng, args.height, args.width, args.nuclei) for _ in range(args.images)]
    pred = [perturbed(rng, t) for t in truth]
    probs = [(p > 0).astype(np.float32) * rng.uniform(0.4, 1.0) for p in pred]

    start = time.perf_counter()
    result = metrics.evaluate_instances(truth, pred)
    instance_s = time.perf_counter() - start
    start = time.perf_counter()
    keras = metrics.keras_mean_iou(probs, truth)
    keras_s = time.perf_counter() - start
    print(
        f"{args.images} images of {args.height}x{args.width}, "
        f"{np.mean([t.max() for t in truth]):.0f} nuclei each (before overlaps)"
    )
    print(f"evaluate_instances: {instance_s:.2f} s ({1e3 * instance_s / args.images:.0f} ms/image)")
    print(f"keras_mean_iou:     {keras_s:.2f} s")
    print(
        f"dsb_score {result['dsb_score']:.3f}  f1@0.50 {result['f1@0.50']:.3f}  "
        f"pq {result['pq']:.3f}  keras_mean_iou {keras:.3f}"
    )


if __name__ == "__main__":
    main()
