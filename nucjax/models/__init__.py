"""Model registry keyed by `config.model.name`.

Each entry is a function `build(config) -> ModelSpec` (see nucjax.models.spec). Modules are
imported lazily so that importing one network does not pay for the others.
"""

from __future__ import annotations

import importlib

from nucjax.models.spec import Instances, ModelSpec

_REGISTRY = {
    "simple_cnn": "nucjax.models.simple_cnn",
    "unet": "nucjax.models.unet",
    "resnet": "nucjax.models.resnet",
    "mask_rcnn": "nucjax.models.mask_rcnn",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def build(config) -> ModelSpec:
    """The ModelSpec for `config.model.name`; `config` is the whole experiment config."""
    name = config.model.name
    if name not in _REGISTRY:
        raise ValueError(
            f"config.model.name={name!r} is not a known model; choose one of {names()}"
        )
    return importlib.import_module(_REGISTRY[name]).build(config)


__all__ = ["Instances", "ModelSpec", "build", "names"]
