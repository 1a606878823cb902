"""nucjax: nuclei segmentation networks in JAX/Flax, trained and compared on DSB 2018.

  import nucjax
  model = nucjax.load("runs/unet")          # a training workdir, or a model bundle file
  labels, info = model.segment(image)       # (H, W) numpy image -> (H, W) int32 nucleus ids

(nucjax.api). Importing nucjax changes no global JAX state and imports no JAX until `load` is
first used. Entry points choose the process-wide settings with `nucjax.runtime.configure()`
(see there for the one-line opt-in).
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so that `import nucjax.runtime` (entry points, before jax starts) imports no jax.
    if name in ("load", "Model"):
        from nucjax import api

        return getattr(api, name)
    raise AttributeError(f"module 'nucjax' has no attribute {name!r}")
