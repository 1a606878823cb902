"""The classical baseline (nucjax.classical: Otsu + distance watershed) on a DSB split.

  python experiments/classical_baseline.py --split=validation     # DSB score, per modality
  python experiments/classical_baseline.py --split=test --submission=out.csv.gz
  python experiments/classical_baseline.py --config=configs/unet.py:tiny --split=validation \
      --output=runs/classical/eval/validation.json      # synthetic data; report for table1

Scored by the very evaluator the trainer and --mode=evaluate use (nucjax.evaluators), so its
figures stand beside the networks'. --config only chooses the data (config.data: source,
data_dir, split seed; default configs/common.py, the real DSB 2018 set); nothing is trained or
fitted. --output writes the report in --mode=evaluate's JSON layout (set metrics, per
modality, one row per image). On the unlabelled test split it only writes a Kaggle
submission. Prints the DSB score overall and per modality, then the same as one JSON line.
"""

from __future__ import annotations

import gzip
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from nucjax import classical, data, evaluators, metrics, outputs  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", os.path.join(REPO, "configs", "common.py"), "Config whose `data` is scored."
)
flags.DEFINE_string("split", "validation", "Split to score (or to write a submission of).")
flags.DEFINE_string("submission", "", "Write a Kaggle CSV (.gz: gzipped) instead of scoring.")
flags.DEFINE_string("output", "", "Also write the report as JSON here (evaluate's layout).")


def _record(image, label):
    instances, mask = classical.otsu_watershed(image)
    return metrics.image_record(label, instances.label, mask)


def _write_submission(data_config, split: str, path: str) -> None:
    rows = [("ImageId", "EncodedPixels")]
    for example in data.examples(data_config, split):
        instances, _ = classical.otsu_watershed(example["image"])
        rows += outputs.submission_rows(example["id"], instances.label)
    text = "".join(f"{a},{b}\n" for a, b in rows)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt") as f:
        f.write(text)
    print(f"written: {path} ({len(rows) - 1} rows)")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    data_config, split = FLAGS.config.data, FLAGS.split
    if FLAGS.submission:
        _write_submission(data_config, split, FLAGS.submission)
        return
    result = evaluators.Evaluator(split, split).score(data_config, _record)
    if FLAGS.output:
        report = {
            "model": "classical",
            "split": split,
            "data_source": data_config.source,
            "data": data_config.to_dict(),
            **{k: result[k] for k in ("metrics", "by_modality", "images", "seconds")},
        }
        outputs.write_text(FLAGS.output, json.dumps(report, indent=2) + "\n")
    summary = {
        "split": split,
        "num_images": result["metrics"]["num_images"],
        "dsb_score": round(result["metrics"]["dsb_score"], 4),
        "by_modality": {
            m: {"num_images": v["num_images"], "dsb_score": round(v["dsb_score"], 4)}
            for m, v in result["by_modality"].items()
        },
    }
    print(f"{split}: dsb_score {summary['dsb_score']:.4f} over {summary['num_images']} images")
    for modality, values in summary["by_modality"].items():
        print(f"  {modality}: dsb_score {values['dsb_score']:.4f} ({values['num_images']} images)")
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
