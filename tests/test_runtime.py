"""runtime: quiet logs pass nucjax's own INFO lines and other libraries' warnings only."""

import logging

from absl import logging as absl_logging

import nucjax
from nucjax import runtime


def _record(pathname, level):
    return logging.LogRecord("absl", level, pathname, 1, "message", None, None)


def test_quiet_filter_keeps_nucjax_info_and_everyones_warnings():
    ours = f"{nucjax.__path__[0]}/train.py"
    orbax = "/venv/lib/python3.11/site-packages/orbax/checkpoint/checkpoint_manager.py"
    handler = absl_logging.get_absl_handler()
    try:
        runtime.set_verbose(False)
        assert handler.filter(_record(ours, logging.INFO))
        assert not handler.filter(_record(orbax, logging.INFO))
        assert handler.filter(_record(orbax, logging.WARNING))
        runtime.set_verbose(True)
        assert handler.filter(_record(orbax, logging.INFO))
    finally:
        runtime.set_verbose(False)  # what conftest's configure() left
