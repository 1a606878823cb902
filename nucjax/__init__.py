"""nucjax: nuclei segmentation networks in JAX/Flax, trained and compared on DSB 2018."""

import importlib.metadata
import os
import sys


def _tune_cpu_convolutions() -> None:
    """Route CPU convolution weight-gradients to the multi-threaded path (jaxlib 0.10.x).

    By default jaxlib 0.10.2 sends them to a single-threaded kernel at ~9 GFLOP/s; this flag
    brings them to ~99 GFLOP/s on a 2-core machine (../shared/STACK_NOTES.md). It must be set
    before jax starts, and only for the jaxlib that knows it: an unknown XLA flag is fatal.
    """
    if "jax" in sys.modules:
        return
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return
    if not version.startswith("0.10."):
        return
    flag = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


_tune_cpu_convolutions()


def _use_rbg_prng() -> None:
    """Make "rbg" the default PRNG implementation unless the user chose one.

    Threefry random bits are inlined into every initializer, and XLA:CPU takes ~25 s to compile
    a tiny U-Net's init with them; with rbg, 3 s (train step 9.5 s -> 4.6 s with dropout).
    rbg still uses threefry for split/fold_in, so derived keys stay independent.
    """
    if "JAX_DEFAULT_PRNG_IMPL" not in os.environ:
        import jax

        jax.config.update("jax_default_prng_impl", "rbg")


_use_rbg_prng()
