"""Moved to nucjax/configs/mask_rcnn.py (installed with nucjax: --config=mask_rcnn:VARIANT).
Re-exported for --config=configs/mask_rcnn.py[:VARIANT] and `from configs import mask_rcnn`."""

from nucjax.configs.mask_rcnn import VARIANTS, get_config  # noqa: F401
