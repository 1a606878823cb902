"""Seconds to segment one whole image: network (tiled) and post-processing, per image size.

  python experiments/bench_predict.py --workdir=runs/unet
  python experiments/bench_predict.py --workdir=runs/unet \
      --sizes=256,1024 --repeats=5 --out=experiments/results/bench_predict_unet.json
  python experiments/bench_predict.py --config=configs/unet.py:quick   # untrained weights
  python experiments/bench_predict.py --workdir=runs/unet --tile_size=1024  # not the saved one

Images are synthetic fluorescence nuclei (nucjax.data.synthetic) of size x size, predicted
exactly as evaluate and predict do (nucjax.whole_image.segment_image, tiles and overlap
from config.eval, or --tile_size: a workdir keeps the tile_size it was trained with). The
first call per size compiles and is reported apart; the figures to record are the medians
of the remaining calls. The network's time does not depend on its weights, but
post-processing does (it follows the nuclei the network finds): without a checkpoint in
--workdir the script runs freshly initialised weights and says so; prefer a trained workdir.
"""

from __future__ import annotations

import json
import os
import statistics
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
flags.DEFINE_string("sizes", "256,1024,2048", "comma-separated square image sizes")
flags.DEFINE_integer("tile_size", 0, "eval.tile_size to predict with (0: the config's)")
flags.DEFINE_integer("repeats", 3, "timed calls per size after the compiling one")
flags.DEFINE_string("out", "", "also write the results as JSON here")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax
    import numpy as np

    from nucjax import outputs, tiling, whole_image
    from nucjax.data import synthetic
    from nucjax.data.images import network_input

    if not (FLAGS.workdir or FLAGS.config):
        raise app.UsageError("give --workdir (a trained run) or --config")
    config, spec, variables, weights = inference_model(FLAGS.workdir, FLAGS.config)
    if not FLAGS.workdir:
        print("no --workdir: timing FRESHLY INITIALISED weights (post-processing unrepresentative)")
    ev = config.eval
    if FLAGS.tile_size:
        ev = ev.copy_and_resolve_references()
        ev.tile_size = FLAGS.tile_size
    rows = []
    for size in (int(s) for s in FLAGS.sizes.split(",") if s):
        image, _ = synthetic.synthetic_example(np.random.default_rng(size), size, False)
        image = network_input(image, config.data.input_view)
        times = []
        for _ in range(FLAGS.repeats + 1):
            start = time.perf_counter()
            p = whole_image.segment_image(spec, variables, image, ev)
            times.append((time.perf_counter() - start, p.predict_s, p.postprocess_s))
        first, rest = times[0], times[1:] or times[:1]
        tile_rows, tile_cols, tile = tiling.tile_grid(
            size, size, spec.stride, ev.tile_size, ev.tile_overlap
        )
        rows.append(
            {
                "size": size,
                "tiles": len(tile_rows) * len(tile_cols),
                "tile": list(tile),
                "first_call_s": first[0],
                "total_s": statistics.median(t[0] for t in rest),
                "network_s": statistics.median(t[1] for t in rest),
                "postprocess_s": statistics.median(t[2] for t in rest),
                "nuclei": int(p.instances.label.max()),
            }
        )
    result = {
        "model": config.model.name,
        "weights": weights,
        "device": str(jax.devices()[0]),
        "tile_size": ev.tile_size,
        "tile_overlap": ev.tile_overlap,
        "repeats": FLAGS.repeats,
        "rows": rows,
    }
    print(f"{config.model.name}, {weights}, on {result['device']}")
    print(
        "| size | tiles | first call (compile) s | total s | network s | post-process s | nuclei |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        tiles = f"{r['tiles']} of {r['tile'][0]}x{r['tile'][1]}"
        print(
            f"| {r['size']} | {tiles} | {r['first_call_s']:.2f} | {r['total_s']:.3f} | "
            f"{r['network_s']:.3f} | {r['postprocess_s']:.3f} | {r['nuclei']} |"
        )
    if FLAGS.out:
        outputs.write_text(FLAGS.out, json.dumps(result, indent=2) + "\n")
        print(f"written: {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
