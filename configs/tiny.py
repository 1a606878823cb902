"""Moved to nucjax/configs/tiny.py; this re-export keeps `from configs import tiny` working."""

from nucjax.configs.tiny import apply_tiny  # noqa: F401
