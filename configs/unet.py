"""Moved to nucjax/configs/unet.py (installed with nucjax: --config=unet:VARIANT).
Re-exported for --config=configs/unet.py[:VARIANT] and `from configs import unet`."""

from nucjax.configs.unet import VARIANTS, get_config  # noqa: F401
