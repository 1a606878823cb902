"""nucjax's command line: `nucjax MODE ...` (installed) or `python -m nucjax.main --mode=MODE ...`.

  nucjax train --config=unet:quick --workdir=runs/unet_quick
  nucjax train --config=unet --workdir=runs/unet --config.optim.learning_rate=3e-4
  nucjax evaluate --workdir=runs/unet
  nucjax predict --workdir=runs/unet --input=my_images/ --output=out/
      [--figure_image=NAME] [--checkpoint_step=K] [--channel=K] [--rois] [--verbose]
  nucjax export --workdir=runs/unet --output=unet.nucjax     # one file to hand on
  nucjax predict --workdir=unet.nucjax --input=my_images/     # a bundle wherever a workdir goes

Several processes (hosts, or one process per GPU): the same command in every process, plus
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I   (I = 0 .. N-1), or
  --distributed   (SLURM, Open MPI or a Cloud TPU pod slice: jax detects the three)
Every process trains on its rows of each global batch; process 0 writes metrics, config and
reports; all of them write and read the checkpoints together (BUILD_NOTES.md, "Multi-host").

`nucjax MODE ARGS` is `python -m nucjax.main MODE ARGS` and `python -m nucjax.main --mode=MODE
ARGS` (train is the default mode).
--config takes a shipped config by name (unet, simple_cnn, resnet, mask_rcnn; `:VARIANT`
after it) or a config file (configs/unet.py:quick): nucjax.configs.
Training needs --config (a locked config: a mistyped override such as
--config.optim.learning_rte=0.1 fails). Evaluate and predict use the config the workdir saved;
a --config given there may change evaluation and post-processing (config.eval), not the network.

Exit codes: 0 done; 1 an error (expected user errors print one line: a config value out of
range, a missing checkpoint, a damaged bundle or data set file, ...); 3 training was stopped
by SIGTERM or SIGINT after saving a checkpoint (nucjax.preemption): run the same command again
to resume; 4 predict wrote every image it could, but the outputs of some could not be written
(disk full, permission denied: listed on stderr and in summary.json under failed_files).
"""

from __future__ import annotations

import os
import sys

import nucjax.runtime

nucjax.runtime.configure()  # XLA CPU flags, the PRNG and quiet logs, before jax starts

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from nucjax import configs  # noqa: E402

MODES = ("train", "evaluate", "predict", "export")


class _ShippedConfigs(flags.ArgumentParser):
    """ml_collections' config file parser, given a shipped config's name as its file."""

    def __init__(self, files: flags.ArgumentParser):
        self.files = files

    def parse(self, argument):
        return self.files.parse(configs.config_file(argument))

    def flag_type(self):
        return self.files.flag_type()


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config: a shipped one by name (unet:quick; simple_cnn, unet, resnet, mask_rcnn) "
    "or a config file (configs/unet.py:quick).",
    lock_config=True,
)
FLAGS["config"].parser = _ShippedConfigs(FLAGS["config"].parser)
flags.DEFINE_string(
    "workdir",
    None,
    "Where checkpoints, metrics and outputs go. evaluate/predict/export: also a model bundle "
    "file (nucjax export), whose outputs go beside it.",
)
flags.DEFINE_enum("mode", "train", MODES, "What to do (the console command's first word).")
flags.DEFINE_string(
    "input",
    None,
    "predict: image files and/or folders, comma-separated; or split:NAME (e.g. split:test) "
    "for a split of config.data.",
)
flags.DEFINE_string(
    "output",
    None,
    "predict: output folder (default WORKDIR/predictions); export: the bundle file to write "
    "(default WORKDIR/model.nucjax).",
)
flags.DEFINE_integer(
    "checkpoint_step", None, "evaluate/predict/export: checkpoint step (default latest)."
)
flags.DEFINE_string(
    "figure_image", None, "predict: comma-separated image stems or file names to draw Figure 2 for."
)
flags.DEFINE_integer(
    "channel",
    None,
    "predict: the nuclear channel (0-based) of multi-channel images (needed for TIFFs with a "
    "channel axis; picks one colour of RGB images; grey images are read as they are).",
)
flags.DEFINE_bool("rois", False, "predict: also write NAME_rois.zip, Fiji/ImageJ ROIs.")
flags.DEFINE_bool(
    "verbose", False, "Show every library's log lines (TensorFlow, XLA, orbax), not only nucjax's."
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
    output = FLAGS.output or workdir.output_dir(FLAGS.workdir, "predictions")
    figures = [n for n in (FLAGS.figure_image or "").split(",") if n]
    if FLAGS.input.startswith("split:"):
        split = FLAGS.input.removeprefix("split:")
        summary = predict.predict_split(
            model, split, output, figure_images=figures, rois=FLAGS.rois
        )
    else:
        inputs = [p for p in FLAGS.input.split(",") if p]
        summary = predict.predict_folder(
            model, inputs, output, figure_images=figures, channel=FLAGS.channel, rois=FLAGS.rois
        )
    print(f"{summary['processed']} images segmented, {summary['skipped']} skipped", end="")
    if summary["failed"]:
        print(f", {summary['failed']} FAILED to write", end="")
    print(f" (checkpoint step {summary['step']})")
    for item in summary["skipped_files"]:
        print(f"  skipped {item['file']}: {item['reason']}")
    for item in summary["failed_files"]:
        print(f"  FAILED  {item['file']}: outputs not written: {item['reason']}")
    for name in summary["figures_not_found"]:
        print(f"  --figure_image={name}: no such input image")
    print(f"outputs:    {summary['output_dir']}")
    print(f"submission: {summary['submission']}")
    print(f"summary:    {summary['summary']}")
    if summary["failed"]:
        sys.exit(predict.WRITE_FAILED_EXIT_CODE)


def _export():
    from nucjax import bundle, workdir

    if FLAGS.config is not None:
        raise app.UsageError("export writes the config the workdir saved; leave out --config")
    output = FLAGS.output or os.path.join(FLAGS.workdir, f"model{bundle.SUFFIX}")
    info = workdir.export(FLAGS.workdir, output, FLAGS.checkpoint_step)
    print(f"{info['model']} model, checkpoint step {info['step']}: {info['path']}", end="")
    print(f" ({info['bytes']:,} bytes)")


def _train():
    import jax

    from nucjax import train

    if FLAGS.config is None:
        raise app.UsageError("training needs --config=NETWORK[:VARIANT], e.g. --config=unet:quick")
    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if jax.process_index() == 0:
        print(f"checkpoints: {summary['checkpoints']}")
        print(f"metrics:     {summary['metrics']} (TensorBoard: {FLAGS.workdir}/tensorboard)")
        print(f"summary:     {os.path.join(FLAGS.workdir, 'summary.json')}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    nucjax.runtime.set_verbose(FLAGS.verbose)  # before TensorFlow starts, so its C++ obeys
    import jax

    from nucjax import (
        bundle,
        checkpoint,
        config_checks,
        data,
        evaluators,
        parallel,
        preemption,
        workdir,
    )
    from nucjax.data.dsb2018_readers import Dsb2018Error

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
        {"train": _train, "evaluate": _evaluate, "predict": _predict, "export": _export}[
            FLAGS.mode
        ]()
    except (
        FileNotFoundError,  # also checkpoint.CheckpointNotFoundError
        bundle.BundleError,
        FloatingPointError,  # a diverged training: the message names the last good checkpoint
        checkpoint.IncompatibleCheckpointError,
        checkpoint.DamagedCheckpointError,  # names the step folder; an older one may be intact
        config_checks.ConfigError,
        data.UnknownSplitError,
        Dsb2018Error,  # a bad source file or a damaged build, named with what to do
        parallel.DistributedSetupError,
        evaluators.UnlabelledSplitError,
        workdir.ConfigMismatchError,
        workdir.WorkdirBusyError,  # another run trains in the same workdir
    ) as e:
        # Expected user errors: one line that says what is wrong, not a traceback.
        sys.exit(f"nucjax: {e}")
    except preemption.Preempted as e:
        # Its own exit code, so a job script can tell "resubmit me" from success and failure.
        print(f"nucjax: {e}", file=sys.stderr)
        sys.exit(preemption.EXIT_CODE)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a misspelt --config.FIELD override as one line, not the
    KeyError/AttributeError traceback ml_collections raises for it, and an override without
    the --config it would change as one line, not absl's "Unknown command line flag"."""
    flags_given = [arg.split("=", 1)[0] for arg in argv[1:]]
    overrides = [flag for flag in flags_given if flag.startswith("--config.")]
    if overrides and "--config" not in flags_given:
        sys.exit(
            f"nucjax: {overrides[0]} overrides a field of --config, which is not given: add "
            "the run's config (e.g. --config=unet:best; evaluate and predict refuse one that "
            "builds another network)"
        )
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:
        # "'name'", or "'name'\nDid you mean "train" instead of "name"?" (ml_collections)
        while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(...))
            e = e.args[0]
        name, _, hint = str(e.args[0] if e.args else e).partition("\n")
        name = name.strip("\"'")
        for arg in argv[1:]:
            flag = arg.split("=", 1)[0]
            if flag.startswith("--config.") and name in flag.split("."):
                sys.exit(f"nucjax: {flag}: the config has no field {name!r}. {hint}".rstrip())
        raise


def console() -> None:
    """The `nucjax` console command: `nucjax MODE ARGS` runs `--mode=MODE ARGS`."""
    if len(sys.argv) > 1 and sys.argv[1] in MODES:
        sys.argv[1:2] = [f"--mode={sys.argv[1]}"]
    # What absl's --help shows: the docstring and key flags of the program (sys.argv[0]).
    sys.modules["__main__"].__doc__ = __doc__
    for flag in FLAGS.get_key_flags_for_module(__name__):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    console()
