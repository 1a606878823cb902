"""What the trainer needs to know about a network: the contract every model fulfils.

A model is "network + its loss + its post-processing" in one object (the scenic pattern), so
that one trainer serves every model without branching on its name.

Host batches (what every input path yields, numpy or jax arrays):
  image: (B, H, W, 3) float32, per-image normalised (nucjax.data.images.network_input)
  label: (B, H, W) int32 instance ids, 0 background, 1..N nuclei, -1 "not labelled"
         (padding around small images, unlabelled test images); pixels labelled -1 carry no
         loss and count in no metric
  valid: (B,) float32, 1.0 for a real example, 0.0 for a padding example (counts nowhere)

Sums and counts: losses and metrics travel as (sum, count) pairs so that a mean over devices,
padded batches or several batches is exact: mean = sum(sums) / sum(counts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SumCount = tuple[jax.Array, jax.Array]
TILINGS = ("pixels", "detections")
Batch = Mapping[str, jax.Array]


class Instances(NamedTuple):
    """Instance segmentation of one image, the output every model's post-processing gives.

    label: (H, W) int32, 0 background, 1..N nuclei, never overlapping
    scores: (N,) float32, the confidence of nucleus i + 1
    """

    label: np.ndarray
    scores: np.ndarray


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A network with its loss, its foreground map and its instance post-processing.

    module: flax module, `module.apply(variables, image, label=None, train=bool)` with image
        (B, H, W, 3) float32 and label (B, H, W) int32 (used only by models that sample
        targets during training, such as Mask R-CNN). Returns a pytree of outputs. Batch norm
        statistics live in the `batch_stats` collection; BatchNorm layers use
        `axis_name=spec.axis_name` so statistics are synchronised across devices in training.
    loss: (outputs, batch) -> (terms, metrics), both dict[str, (sum, count)]. The training
        objective is sum over terms of psum(sum) / psum(count) across devices; metrics are
        reported the same way. Pure and jittable.
    foreground: eval outputs -> (B, H, W) float32 foreground probability, for pixel metrics.
    postprocess: (outputs of one image as numpy, no batch axis) -> Instances. When `seedable`
        it also takes seeds=Instances of another model (config.eval.seeds_from) that decide
        which nuclei there are, this model's outputs where their edges run.
    stride: H and W given to the module must be multiples of this.
    axis_name: the device axis batch norm synchronises over; nucjax.models.build sets it to
        nucjax.parallel.AXIS. None: no batch norm synchronisation.
    prepare_variables: freshly initialised variables -> variables to train from (host-side;
        for example a pretrained backbone loaded from disk). Identity by default.
    frozen: params -> pytree of bools, True where a leaf is held fixed for the first
        `config.model.freeze_backbone_steps` steps; None when nothing can be frozen.
    tiling: how nucjax.tiling joins the outputs of overlapping tiles (TILINGS):
        "pixels": outputs are (B, H, W, C) maps, stitched pixel by pixel (per-pixel networks);
        "detections": outputs are a dict of boxes (B, D, 4) y0 x0 y1 x1 pixels, valid (B, D),
        foreground (B, H, W) and per-detection arrays (B, D, ...) under any other key; each
        detection is kept from the tile that owns its box centre (detectors).
    compute_dtype: what the training step computes in (config.model.compute_dtype):
        "bfloat16" casts the parameters and the image to bfloat16 for the forward and backward
        pass while the parameters, the optimizer state, batch statistics, the outputs given
        to the loss and the loss stay float32 (cast_floats); "float32" changes nothing.
    """

    module: nn.Module
    loss: Callable[[Any, Batch], tuple[dict[str, SumCount], dict[str, SumCount]]]
    foreground: Callable[[Any], jax.Array]
    postprocess: Callable[[Any], Instances]
    stride: int = 1
    axis_name: str | None = None
    prepare_variables: Callable[[dict], dict] = dataclasses.field(default=lambda v: v)
    frozen: Callable[[Any], Any] | None = None
    tiling: str = "pixels"
    compute_dtype: str = "float32"
    seedable: bool = False

    def __post_init__(self):
        if self.tiling not in TILINGS:
            raise ValueError(f"ModelSpec.tiling={self.tiling!r}; choose one of {TILINGS}")

    def init_variables(self, key: jax.Array, size: int) -> dict[str, Any]:
        """Fresh variables {"params", "batch_stats"?} from a dummy (1, S, S) image and label,
        S = size rounded up to the stride. Jit or eval_shape it: run eagerly it compiles every
        initializer separately."""
        size = -(-int(size) // self.stride) * self.stride
        image = jnp.zeros((1, size, size, 3), jnp.float32)
        label = jnp.zeros((1, size, size), jnp.int32)
        return self.module.init({"params": key, "dropout": key}, image, label, train=False)


def cast_floats(tree, dtype):
    """Every floating-point leaf of `tree` cast to `dtype`; integer and bool leaves as they are."""
    dtype = jnp.dtype(dtype)

    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x

    return jax.tree.map(cast, tree)
