"""The classical baseline (nucjax.classical: Otsu + distance watershed) on a DSB split.

  python experiments/classical_baseline.py --split=validation     # DSB score, per modality
  python experiments/classical_baseline.py --split=test --submission=out.csv.gz

Scored by the very evaluator the trainer and --mode=evaluate use (nucjax.evaluators), so its
figures stand beside the networks'. On the unlabelled test split it only writes a Kaggle
submission. Prints the DSB score overall and per modality, then the same as one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()

from configs import common  # noqa: E402
from nucjax import classical, data, evaluators, metrics, outputs  # noqa: E402


def _record(image, label):
    instances, mask = classical.otsu_watershed(image)
    return metrics.image_record(label, instances.label, mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="validation")
    parser.add_argument("--submission", default="", help="write a Kaggle CSV (.gz: gzipped)")
    args = parser.parse_args()
    data_config = common.get_config().data
    if args.submission:
        rows = [("ImageId", "EncodedPixels")]
        for example in data.examples(data_config, args.split):
            instances, _ = classical.otsu_watershed(example["image"])
            rows += outputs.submission_rows(example["id"], instances.label)
        text = "".join(f"{a},{b}\n" for a, b in rows)
        opener = gzip.open if args.submission.endswith(".gz") else open
        with opener(args.submission, "wt") as f:
            f.write(text)
        print(f"written: {args.submission} ({len(rows) - 1} rows)")
        return
    result = evaluators.Evaluator(args.split, args.split).score(data_config, _record)
    summary = {
        "split": args.split,
        "num_images": result["metrics"]["num_images"],
        "dsb_score": round(result["metrics"]["dsb_score"], 4),
        "by_modality": {
            m: {"num_images": v["num_images"], "dsb_score": round(v["dsb_score"], 4)}
            for m, v in result["by_modality"].items()
        },
    }
    print(f"{args.split}: dsb_score {summary['dsb_score']:.4f} over {summary['num_images']} images")
    for modality, values in summary["by_modality"].items():
        print(f"  {modality}: dsb_score {values['dsb_score']:.4f} ({values['num_images']} images)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
