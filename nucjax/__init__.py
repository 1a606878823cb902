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
