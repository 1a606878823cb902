"""nucjax: nuclei segmentation networks in JAX/Flax, trained and compared on DSB 2018.

Importing nucjax changes no global JAX state. Entry points choose the process-wide settings
with `nucjax.runtime.configure()` (see there for the one-line opt-in).
"""
