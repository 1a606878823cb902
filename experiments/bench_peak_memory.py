"""Peak memory (RSS) of segmenting one large image, and nuclei per copy of a mosaic.

  python experiments/bench_peak_memory.py --workdir=runs/mask_rcnn_best --size=2048
  python experiments/bench_peak_memory.py --workdir=runs/unet_best --size=2048
  python experiments/bench_peak_memory.py --config=configs/mask_rcnn.py:quick   # untrained

The image is synthetic fluorescence nuclei (nucjax.data.synthetic): with --mosaic=S, one S x S
image repeated to size x size, and the nuclei found in the S x S image alone are compared
with those found in every copy (a nucleus counts in the copy holding its centroid). Predicted
as evaluate and predict do (nucjax.whole_image.segment_image with config.eval's tiles).
Each model in its own process: the peak RSS (getrusage ru_maxrss) is the process's, printed
after loading the model and again after the prediction.
"""

from __future__ import annotations

import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()  # rbg PRNG and CPU flags, as in training

from experiments.nucjax_steps import inference_model  # noqa: E402

config_flags.DEFINE_config_file("config", None, "config file", lock_config=True)
flags.DEFINE_string("workdir", None, "a trained run's workdir (its latest checkpoint)")
flags.DEFINE_integer("size", 2048, "side of the square image, pixels")
flags.DEFINE_integer("mosaic", 256, "side of the image repeated into the mosaic; 0 = none")
FLAGS = flags.FLAGS


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def nuclei_per_copy(label, side: int) -> list[int]:
    """Nuclei of label (H, W) by the side x side copy that holds their centroid."""
    import numpy as np
    from scipy import ndimage

    n = int(label.max())
    centres = ndimage.center_of_mass(np.ones_like(label), label, np.arange(1, n + 1))
    cells = [(int(cy) // side, int(cx) // side) for cy, cx in centres]
    grid = -(-label.shape[0] // side), -(-label.shape[1] // side)
    return [cells.count((i, j)) for i in range(grid[0]) for j in range(grid[1])]


def main(argv):
    del argv
    import jax
    import numpy as np

    from nucjax import whole_image
    from nucjax.data import synthetic
    from nucjax.data.images import network_input

    if not (FLAGS.workdir or FLAGS.config):
        raise app.UsageError("give --workdir (a trained run) or --config")
    config, spec, variables, weights = inference_model(FLAGS.workdir, FLAGS.config)
    ev, size, side = config.eval, FLAGS.size, FLAGS.mosaic or FLAGS.size
    raw, _ = synthetic.synthetic_example(np.random.default_rng(side), side, False)
    unit = network_input(raw, config.data.input_view)
    image = np.tile(unit, (-(-size // side), -(-size // side), 1))[:size, :size]
    print(f"{config.model.name}, {weights}, on {jax.devices()[0]}; tiles {ev.tile_size}")
    print(f"peak RSS after loading the model: {peak_rss_mib():.0f} MiB")
    alone = None
    if FLAGS.mosaic:
        alone = int(whole_image.segment_image(spec, variables, unit, ev).instances.label.max())
        print(f"peak RSS after the {side} x {side} image: {peak_rss_mib():.0f} MiB")
    start = time.perf_counter()
    p = whole_image.segment_image(spec, variables, image, ev)
    seconds = time.perf_counter() - start
    print(f"peak RSS after the {size} x {size} image: {peak_rss_mib():.0f} MiB ({seconds:.1f} s)")
    if alone is not None:
        counts = nuclei_per_copy(p.instances.label, side)
        print(
            f"nuclei: {alone} in the {side} x {side} image alone; per copy of the mosaic "
            f"min {min(counts)}, median {int(np.median(counts))}, max {max(counts)} "
            f"over {len(counts)} copies"
        )


if __name__ == "__main__":
    app.run(main)
