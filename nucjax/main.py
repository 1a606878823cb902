"""nucjax's command line.

  python -m nucjax.main --config=configs/unet.py:quick --workdir=runs/unet_quick
  python -m nucjax.main --config=configs/unet.py --workdir=runs/unet \
      --config.optim.learning_rate=3e-4
  python -m nucjax.main --mode=evaluate --workdir=runs/unet
  python -m nucjax.main --mode=predict --workdir=runs/unet \
      --input=my_images/ --output=out/ [--figure_image=NAME] [--checkpoint_step=K]

Several processes (hosts, or one process per GPU): the same command in every process, plus
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I   (I = 0 .. N-1), or
  --distributed   (SLURM, Open MPI or a Cloud TPU pod slice: jax detects the three)
Every process trains on its rows of each global batch; process 0 writes metrics, config and
reports; all of them write and read the checkpoints together (BUILD_NOTES.md, "Multi-host").

Training needs --config (a locked file: a mistyped override such as
--config.optim.learning_rte=0.1 fails). Evaluate and predict use the config the workdir saved;
a --config given there may change evaluation and post-processing (config.eval), not the network.

Exit codes: 0 done; 1 an error (expected user errors print one line: a config value out of
range, a missing checkpoint, ...); 3 training was stopped by SIGTERM or SIGINT after saving a
checkpoint (nucjax.preemption): run the same command again to resume.
"""

from __future__ import annotations

import os
import sys

import nucjax.runtime

nucjax.runtime.configure()  # XLA CPU flags and the PRNG, before jax starts

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
flags.DEFINE_bool(
    "distributed",
    False,
    "Start JAX's multi-process runtime with what jax.distributed.initialize detects (SLURM, "
    "Open MPI, Cloud TPU pod slice); the three flags below override what it detects.",
)
flags.DEFINE_string(
    "coordinator_address", None, "Multi-process: HOST:PORT of process 0's coordinator service."
)
flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes take part.", 1)
flags.DEFINE_integer("process_id", None, "Multi-process: this process's index, 0 .. N-1.", 0)
flags.mark_flags_as_required(["workdir"])


def _evaluate():
    from nucjax import evaluate

    report = evaluate.evaluate(FLAGS.config, FLAGS.workdir, step=FLAGS.checkpoint_step)
    m = report["metrics"]
    print(f"{report['split']}, step {report['step']}: dsb_score {m['dsb_score']:.4f} ", end="")
    print(f"over {m['num_images']} images")
    for modality, values in report["by_modality"].items():
        print(f"  {modality}: dsb_score {values['dsb_score']:.4f} ({values['num_images']} images)")
    print(f"report:  {report['markdown']}")
    print(f"details: {report['json']}")


def _predict():
    from nucjax import predict, workdir

    if not FLAGS.input:
        raise app.UsageError("--mode=predict needs --input=FILES_OR_FOLDERS or --input=split:NAME")
    model = workdir.load(FLAGS.workdir, FLAGS.config, FLAGS.checkpoint_step)
    output = FLAGS.output or os.path.join(FLAGS.workdir, "predictions")
    figures = [n for n in (FLAGS.figure_image or "").split(",") if n]
    if FLAGS.input.startswith("split:"):
        split = FLAGS.input.removeprefix("split:")
        summary = predict.predict_split(model, split, output, figure_images=figures)
    else:
        inputs = [p for p in FLAGS.input.split(",") if p]
        summary = predict.predict_folder(model, inputs, output, figure_images=figures)
    print(f"{summary['processed']} images segmented, {summary['skipped']} skipped", end="")
    print(f" (checkpoint step {summary['step']})")
    for item in summary["skipped_files"]:
        print(f"  skipped {item['file']}: {item['reason']}")
    for name in summary["figures_not_found"]:
        print(f"  --figure_image={name}: no such input image")
    print(f"outputs:    {summary['output_dir']}")
    print(f"submission: {summary['submission']}")
    print(f"summary:    {summary['summary']}")


def _train():
    import jax

    from nucjax import train

    if FLAGS.config is None:
        raise app.UsageError("training needs --config=configs/NETWORK.py[:VARIANT]")
    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if jax.process_index() == 0:
        print(f"checkpoints: {summary['checkpoints']}")
        print(f"metrics:     {summary['metrics']} (TensorBoard: {FLAGS.workdir}/tensorboard)")
        print(f"summary:     {os.path.join(FLAGS.workdir, 'summary.json')}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

    from nucjax import checkpoint, config_checks, data, evaluators, parallel, preemption, workdir

    try:
        # Before anything touches a device: JAX reads the process topology only once.
        parallel.initialize_distributed(
            FLAGS.coordinator_address,
            FLAGS.num_processes,
            FLAGS.process_id,
            auto=FLAGS.distributed,
        )
        logging.info(
            "process %d of %d, JAX devices: %s",
            jax.process_index(),
            jax.process_count(),
            jax.devices(),
        )
        {"train": _train, "evaluate": _evaluate, "predict": _predict}[FLAGS.mode]()
    except (
        FileNotFoundError,  # also checkpoint.CheckpointNotFoundError
        FloatingPointError,  # a diverged training: the message names the last good checkpoint
        checkpoint.IncompatibleCheckpointError,
        config_checks.ConfigError,
        data.UnknownSplitError,
        parallel.DistributedSetupError,
        evaluators.UnlabelledSplitError,
        workdir.ConfigMismatchError,
    ) as e:
        # Expected user errors: one line that says what is wrong, not a traceback.
        sys.exit(f"nucjax: {e}")
    except preemption.Preempted as e:
        # Its own exit code, so a job script can tell "resubmit me" from success and failure.
        print(f"nucjax: {e}", file=sys.stderr)
        sys.exit(preemption.EXIT_CODE)


if __name__ == "__main__":
    app.run(main)
