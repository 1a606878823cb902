"""nucjax's command line.

  python -m nucjax.main --config=configs/unet.py:quick --workdir=runs/unet_quick
  python -m nucjax.main --config=configs/unet.py --workdir=runs/unet \
      --config.optim.learning_rate=3e-4
  python -m nucjax.main --mode=evaluate --config=configs/unet.py --workdir=runs/unet
  python -m nucjax.main --mode=predict --config=configs/unet.py --workdir=runs/unet \
      --input=my_images/ --output=out/ [--figure_image=NAME] [--checkpoint_step=K]

The config file is locked: a mistyped override such as --config.optim.learning_rte=0.1 fails.
"""

from __future__ import annotations

import os
import sys

import nucjax  # noqa: F401  (sets XLA CPU flags before jax starts)

# Config files import `configs.common`; make the repository root importable from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(nucjax.__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/unet.py:quick.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and outputs go.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict"], "What to do.")
flags.DEFINE_string(
    "input",
    None,
    "predict: image files and/or folders, comma-separated; or split:NAME (e.g. split:test) "
    "for a split of config.data.",
)
flags.DEFINE_string("output", None, "predict: output folder (default WORKDIR/predictions).")
flags.DEFINE_integer("checkpoint_step", None, "evaluate/predict: checkpoint step (default latest).")
flags.DEFINE_string(
    "figure_image", None, "predict: comma-separated image stems or file names to draw Figure 2 for."
)
flags.mark_flags_as_required(["config", "workdir"])


def _evaluate():
    from nucjax import evaluate

    report = evaluate.evaluate(FLAGS.config, FLAGS.workdir, step=FLAGS.checkpoint_step)
    m = report["metrics"]
    print(f"{report['split']}, step {report['step']}: dsb_score {m['dsb_score']:.4f} ", end="")
    print(f"over {m['num_images']} images")
    print(f"report:  {report['markdown']}")
    print(f"details: {report['json']}")


def _predict():
    from nucjax import predict

    if not FLAGS.input:
        raise app.UsageError("--mode=predict needs --input=FILES_OR_FOLDERS or --input=split:NAME")
    output = FLAGS.output or os.path.join(FLAGS.workdir, "predictions")
    figures = [n for n in (FLAGS.figure_image or "").split(",") if n]
    common = dict(step=FLAGS.checkpoint_step, figure_images=figures)
    if FLAGS.input.startswith("split:"):
        split = FLAGS.input.removeprefix("split:")
        summary = predict.predict_split(FLAGS.config, FLAGS.workdir, split, output, **common)
    else:
        inputs = [p for p in FLAGS.input.split(",") if p]
        summary = predict.predict_folder(FLAGS.config, FLAGS.workdir, inputs, output, **common)
    print(f"{summary['processed']} images segmented, {summary['skipped']} skipped", end="")
    print(f" (checkpoint step {summary['step']})")
    for item in summary["skipped_files"]:
        print(f"  skipped {item['file']}: {item['reason']}")
    for name in summary["figures_not_found"]:
        print(f"  --figure_image={name}: no such input image")
    print(f"outputs:    {summary['output_dir']}")
    print(f"submission: {summary['submission']}")
    print(f"summary:    {summary['summary']}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Hide GPUs from TensorFlow, or it reserves memory that JAX needs. Predicting needs no
    # TensorFlow at all (accelerator hosts may not have it).
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
    except ImportError:
        pass
    import jax

    logging.info("JAX devices: %s", jax.devices())
    if FLAGS.mode == "evaluate":
        return _evaluate()
    if FLAGS.mode == "predict":
        return _predict()
    from nucjax import train

    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if jax.process_index() == 0:
        print(f"checkpoints: {summary['checkpoints']}")
        print(f"metrics:     {summary['metrics']} (TensorBoard: {FLAGS.workdir}/tensorboard)")
        print(f"summary:     {os.path.join(FLAGS.workdir, 'summary.json')}")


if __name__ == "__main__":
    app.run(main)
