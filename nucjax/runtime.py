"""Process-wide JAX settings that only an entry point may choose; the library never does.

`nucjax.main`, the test conftest and the benchmark scripts call `configure()` before anything
imports jax. A library user who wants the same settings opts in with one line, first thing:

    import nucjax.runtime; nucjax.runtime.configure()

Both settings change speed only, never results' meaning:
- XLA CPU flag (jaxlib 0.10.x): route convolution weight-gradients to the multi-threaded path.
  By default jaxlib 0.10.2 sends them to a single-threaded kernel at ~9 GFLOP/s; the flag
  brings them to ~99 GFLOP/s on a 2-core machine (../shared/STACK_NOTES.md). It must be set
  before jax starts, and only for the jaxlib that knows it: an unknown XLA flag is fatal.
- "rbg" PRNG implementation, unless JAX_DEFAULT_PRNG_IMPL is set. Threefry random bits are
  inlined into every initializer, and XLA:CPU takes ~25 s to compile a tiny U-Net's init with
  them; with rbg, 3 s. rbg still uses threefry for split/fold_in, so keys stay independent.
  Checkpoints store raw keys, so a run must resume under the PRNG it started with.

And the console stays quiet unless asked (`configure(verbose=True)`, `--verbose`):
- TensorFlow's and XLA's C++ logs below errors are off (TF_CPP_MIN_LOG_LEVEL, read when TF
  starts).
- TensorFlow's oneDNN kernels are off (TF_ENABLE_ONEDNN_OPTS=0, verbose or not, so both
  modes compute the same): TF 2.21 prints its oneDNN notices at import whatever
  TF_CPP_MIN_LOG_LEVEL says, and TF here only feeds the input pipeline.
- The shared absl/Python log handler passes INFO lines of nucjax itself, but only warnings
  and errors of other libraries (orbax logs every checkpoint step at INFO, jax the backends
  it could not open).

And one for messages: when orbax fails to read a damaged checkpoint (nucjax then names it in
one line), tensorstore reads still in flight finish on an event loop already closed, and
Python prints a "RuntimeError: Event loop is closed" traceback for each; those are dropped.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import sys

CPU_CONVOLUTION_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def _tune_cpu_convolutions() -> None:
    if "jax" in sys.modules:
        return  # too late: XLA has read its flags
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if version.startswith("0.10.") and "xla_cpu_experimental_ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_CONVOLUTION_FLAG}".strip()


@functools.cache
def import_tensorflow():
    """The tensorflow module, with GPUs hidden from it: nucjax uses TF on the CPU only (input
    pipeline, TFDS, TensorBoard), and a TF that sees a GPU reserves memory JAX needs.
    Raises ImportError on hosts without TensorFlow. Every nucjax import of TF goes here."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # devices already initialised: nothing left to do
        pass
    return tf


@functools.cache
def tensorflow_available() -> bool:
    """Whether TensorFlow imports here (the borrowed GPU hosts have none): what the `auto`
    settings of config.data.pipeline and config.data.storage decide by."""
    try:
        import_tensorflow()
    except ImportError:
        return False
    return True


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# TF's C++ log level when quiet: "2" hides INFO and WARNING (oneDNN notices), keeps errors.
QUIET_TF_CPP_MIN_LOG_LEVEL = "2"


class _NucjaxInfoOnly(logging.Filter):
    """Pass warnings and errors of everyone, INFO and DEBUG only of nucjax's own modules."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


_QUIET_FILTER = _NucjaxInfoOnly()


def set_verbose(verbose: bool) -> None:
    """Quiet (default) or verbose console logs (module docstring). TF's C++ level only takes
    effect if TensorFlow is not imported yet; the Python filter applies at once."""
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler()
    if verbose:
        handler.removeFilter(_QUIET_FILTER)
        if "tensorflow" not in sys.modules:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        handler.addFilter(_QUIET_FILTER)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_CPP_MIN_LOG_LEVEL)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _drop_closed_event_loop_reports() -> None:
    """Wrap sys.unraisablehook so that it ignores RuntimeError("Event loop is closed")."""
    previous = sys.unraisablehook
    if getattr(previous, "nucjax", False):
        return

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    hook.nucjax = True
    sys.unraisablehook = hook


def configure(verbose: bool = False) -> None:
    """Apply nucjax's process-wide settings (module docstring). Call before importing jax."""
    set_verbose(verbose)
    _tune_cpu_convolutions()
    _drop_closed_event_loop_reports()
    import jax

    if "JAX_DEFAULT_PRNG_IMPL" not in os.environ:
        jax.config.update("jax_default_prng_impl", "rbg")
