"""Moved to nucjax/configs/simple_cnn.py (installed with nucjax: --config=simple_cnn:VARIANT).
Re-exported for --config=configs/simple_cnn.py[:VARIANT] and `from configs import simple_cnn`."""

from nucjax.configs.simple_cnn import VARIANTS, get_config  # noqa: F401
