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
"""

from __future__ import annotations

import functools
import importlib.metadata
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


def configure() -> None:
    """Apply nucjax's process-wide settings (module docstring). Call before importing jax."""
    _tune_cpu_convolutions()
    import jax

    if "JAX_DEFAULT_PRNG_IMPL" not in os.environ:
        jax.config.update("jax_default_prng_impl", "rbg")
