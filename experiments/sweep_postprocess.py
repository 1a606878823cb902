"""Choose post-processing thresholds on training images, never on validation.

  python experiments/sweep_postprocess.py --workdir=runs/unet_best --images=64 \
      --grid=seed_threshold=0.3,0.5,0.7 --grid=foreground_threshold=0.4,0.5,0.6

Runs the network once per image of the first --images images of the TRAINING split (whole
images, config.eval tiling and TTA), keeps the outputs, then post-processes them under every
combination of the config.eval values in --grid and scores each (nucjax.metrics, per
modality). Prints a markdown table sorted by DSB score and the best setting as overrides to
pass to evaluate/predict (--config.eval.NAME=VALUE). Validation stays untouched, so its score
with the chosen setting is still an honest estimate (report it once).
With --seeds_from=WORKDIR (a three-class model only) that model's nuclei, predicted once per
image, seed every setting's decoding (config.eval.seeds_from; grid e.g. seed_erosion=1,2,3,
seed_min_score=0.5,0.6,0.7, seed_foreground_threshold=0.2,0.3,0.5). --images=0: every training
image.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()

from nucjax import evaluators, metrics, models, reporting, whole_image, workdir  # noqa: E402
from nucjax.data.images import network_input  # noqa: E402


def _grid(specs: list[str]) -> list[dict]:
    axes = []
    for spec in specs:
        name, values = spec.split("=", 1)
        axes.append([(name, float(v) if "." in v else int(v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--grid", action="append", default=[], help="NAME=V1,V2,... (config.eval)")
    parser.add_argument("--seeds_from", default="", help="workdir whose nuclei seed the decoding")
    args = parser.parse_args()
    config = workdir.saved_config(args.workdir)
    config.eval.seeds_from = args.seeds_from
    model = workdir.load(args.workdir, config)
    cached = []
    shown = reporting.progress(args.images or None, "training images", unit="img")
    for _, image, label, modality in evaluators.labelled_images(config.data, "train", args.images):
        x = network_input(image, config.data.input_view)
        outputs = whole_image.predict_image(model.spec, model.variables, x, config.eval)
        seeds = None if model.seeds is None else whole_image.seed_nuclei(model.seeds, x)
        cached.append((outputs, label, modality, seeds))
        shown.update()
    shown.close()
    rows = []
    for setting in _grid(args.grid):
        trial = config.copy_and_resolve_references()
        trial.eval.update(setting)
        spec = models.build(trial)
        records = [
            metrics.image_record(lab, whole_image.instances(spec, out, *lab.shape, seeds).label)
            for out, lab, _, seeds in cached
        ]
        by_modality = {}
        for m in sorted({m for _, _, m, _ in cached}):
            subset = [r for r, (_, _, mm, _) in zip(records, cached, strict=True) if mm == m]
            by_modality[m] = metrics.summarize(subset)["dsb_score"]
        rows.append((metrics.summarize(records)["dsb_score"], setting, by_modality))
    rows.sort(key=lambda r: -r[0])
    print(f"| setting | DSB ({len(cached)} training images) | per modality |\n|---|---|---|")
    for score, setting, by_modality in rows:
        per = ", ".join(f"{m} {v:.4f}" for m, v in by_modality.items())
        print(f"| {json.dumps(setting)} | {score:.4f} | {per} |")
    print("best: " + " ".join(f"--config.eval.{k}={v}" for k, v in rows[0][1].items()))


if __name__ == "__main__":
    main()
