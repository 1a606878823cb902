"""Moved to nucjax/configs/common.py; this re-export keeps `from configs import common` working."""

from nucjax.configs.common import get_config, variant  # noqa: F401
