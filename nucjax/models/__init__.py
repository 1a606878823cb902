"""Model registry keyed by `config.model.name`.

Each entry is a module with `build(config, *, axis_name) -> ModelSpec` (nucjax.models.spec).
Modules are imported lazily so that importing one network does not pay for the others.

Shared pieces: layers.py (activations, batch norm, upsampling, input checks) and pretrained.py
(backbone checkpoints: loading and freezing); keras_import.py converts Keras weights.
"""

from __future__ import annotations

import dataclasses
import importlib

from nucjax import parallel
from nucjax.models.spec import Instances, ModelSpec

_REGISTRY = {
    "simple_cnn": "nucjax.models.simple_cnn",
    "unet": "nucjax.models.unet",
    "resnet": "nucjax.models.resnet",
    "mask_rcnn": "nucjax.models.mask_rcnn",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


COMPUTE_DTYPES = ("float32", "bfloat16")


def build(config) -> ModelSpec:
    """The ModelSpec for `config.model.name`; `config` is the whole experiment config.

    Every network's batch norm synchronises its statistics over the trainer's mesh axis
    (nucjax.parallel.AXIS), and every network trains in config.model.compute_dtype
    (ModelSpec.compute_dtype): both given here and nowhere else.
    """
    name = config.model.name
    if name not in _REGISTRY:
        raise ValueError(
            f"config.model.name={name!r} is not a known model; choose one of {names()}"
        )
    dtype = config.model.get("compute_dtype", "float32")
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"config.model.compute_dtype={dtype!r}; choose one of {COMPUTE_DTYPES}")
    spec = importlib.import_module(_REGISTRY[name]).build(config, axis_name=parallel.AXIS)
    return dataclasses.replace(spec, compute_dtype=dtype)


__all__ = ["Instances", "ModelSpec", "build", "names"]
