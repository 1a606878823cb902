"""The experiment configs nucjax ships: common.py (every field and its default) and one file
per network, each declaring its VARIANTS in its docstring and `VARIANTS`.

`--config` takes a shipped config by name, or any config file by path:
  --config=unet:best               nucjax/configs/unet.py, variant best (works from any folder
                                   and from an installed nucjax)
  --config=configs/unet.py:best    the same through the repository's configs/ re-exports
  --config=my_unet.py:quick        your own file: copy one of these; it imports
                                   `from nucjax.configs import common, tiny`
"""

from __future__ import annotations

import os

NAMES = ("simple_cnn", "unet", "resnet", "mask_rcnn")


def config_file(spec: str) -> str:
    """A --config value -> the PATH[:VARIANT] ml_collections loads.

    'NAME[:VARIANT]' with NAME in NAMES (and no file of that name in the current folder)
    becomes this folder's NAME.py[:VARIANT]; an existing file is returned as is. Anything else
    raises ValueError naming the shipped configs.
    """
    path, colon, variant = spec.partition(":")
    if os.path.isfile(path):
        return spec
    if path in NAMES:
        return (
            os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{path}.py") + colon + variant
        )
    raise ValueError(
        f"--config={spec}: no config file {path!r} and no shipped config of that name "
        f"(shipped: {', '.join(NAMES)}; e.g. --config=unet:quick)"
    )
