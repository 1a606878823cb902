"""Moved to nucjax/configs/resnet.py (installed with nucjax: --config=resnet:VARIANT).
Re-exported for --config=configs/resnet.py[:VARIANT] and `from configs import resnet`."""

from nucjax.configs.resnet import VARIANTS, get_config  # noqa: F401
