"""Mask R-CNN heads: RPN, box and mask heads, ROI Align over a batch of pyramids, and the
inference-time mask head + mask pasting that skip empty detection slots.

Initialisation follows detectron2: predictors start near zero (normal, std 0.01 for
objectness and class logits, 0.001 for box deltas and mask logits), so every binary
cross-entropy starts at log 2. No normalisation in the heads (detectron2's default).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nucjax.detection import decoding, roi_align
from nucjax.models import fpn
from nucjax.models.layers import UpConv2x2

BOX_POOL, MASK_POOL = 7, 14  # ROI Align output sizes; masks come out 2 * MASK_POOL = 28
DETECTION_CHUNK = 64  # detections per mask-head and paste chunk at inference


def _normal(std: float):
    return nn.initializers.normal(std)


class RPNHead(nn.Module):
    """Shared over levels: 3x3 conv + ReLU, then 1x1 objectness (K) and deltas (4K).

    pyramid [(B, H_l, W_l, C)] -> logits (B, A), deltas (B, A, 4), A = sum_l H_l W_l K, in
    the order of nucjax.detection.anchors.multilevel_anchors.
    """

    num_anchors: int
    width: int

    @nn.compact
    def __call__(self, pyramid: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
        conv = nn.Conv(self.width, (3, 3), kernel_init=_normal(0.01), name="conv")
        objectness = nn.Conv(self.num_anchors, (1, 1), kernel_init=_normal(0.01), name="logits")
        deltas = nn.Conv(4 * self.num_anchors, (1, 1), kernel_init=_normal(0.01), name="deltas")
        hidden = [nn.relu(conv(p)) for p in pyramid]
        logits = fpn.flatten_levels([objectness(h) for h in hidden], 1)[..., 0]
        return logits, fpn.flatten_levels([deltas(h) for h in hidden], 4)


class BoxHead(nn.Module):
    """(..., 7, 7, C) ROI features -> class logits (..., 2) and class-agnostic deltas (..., 4).

    `convs` 3x3 conv + ReLU layers (0 = detectron2's "2fc" head), then `fcs` dense + ReLU.
    """

    convs: int = 0
    fcs: int = 2
    width: int = 1024
    conv_width: int = 256

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        for i in range(self.convs):
            x = nn.relu(nn.Conv(self.conv_width, (3, 3), name=f"conv{i}")(x))
        x = x.reshape(x.shape[0], -1)
        for i in range(self.fcs):
            x = nn.relu(nn.Dense(self.width, name=f"fc{i}")(x))
        logits = nn.Dense(2, kernel_init=_normal(0.01), name="class_logits")(x)
        deltas = nn.Dense(4, kernel_init=_normal(0.001), name="deltas")(x)
        return logits.reshape(*lead, 2), deltas.reshape(*lead, 4)


class MaskHead(nn.Module):
    """(..., 14, 14, C) ROI features -> (..., 28, 28) nucleus mask logits (class-agnostic)."""

    convs: int = 4
    width: int = 256

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        for i in range(self.convs):
            x = nn.relu(nn.Conv(self.width, (3, 3), name=f"conv{i}")(x))
        # einsum + reshape, not nn.ConvTranspose: ~20x faster backward on CPU (STACK_NOTES).
        x = nn.relu(UpConv2x2(self.width, name="upsample")(x))
        x = nn.Conv(1, (1, 1), kernel_init=_normal(0.001), name="logits")(x)[..., 0]
        return x.reshape(*lead, *x.shape[1:])


def pool(maps: list[jax.Array], boxes: jax.Array, size: int) -> jax.Array:
    """ROI Align of boxes (B, R, 4) on levels [(B, H_l, W_l, C)] -> (B, R, size, size, C)."""
    strides = fpn.level_strides(len(maps))
    align = lambda f, b: roi_align.multilevel_roi_align(f, b, size, strides)
    return jax.vmap(align)(maps, boxes)


def _chunked(x: jax.Array, chunk: int) -> jax.Array:
    """(N, ...) -> (ceil(N / chunk), chunk, ...), zero-padded."""
    pad = -x.shape[0] % chunk
    return jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(-1, chunk, *x.shape[1:])


def foreground_map(
    masks: jax.Array,
    boxes: jax.Array,
    valid: jax.Array,
    image_shape,
    chunk: int = DETECTION_CHUNK,
) -> jax.Array:
    """Max over the pasted masks of one image: (D, M, M), (D, 4), (D,) -> (H, W) float32.

    Pastes `chunk` detections at a time (a scan), so memory stays chunk * H * W whatever D,
    and skips chunks without a valid detection (lax.cond; under vmap it computes them too).
    """
    chunk = max(1, min(chunk, masks.shape[0]))

    def paste_max(acc, args):
        def paste(acc):
            pasted = decoding.paste_masks(*args, image_shape)
            return jnp.maximum(acc, jnp.max(pasted, axis=0))

        return jax.lax.cond(jnp.any(args[2]), paste, lambda acc: acc, acc), None

    # zeros_like keeps the masks' varying mesh axes (shard_map), as the scan carry must.
    zeros = jnp.zeros_like(masks, jnp.float32, shape=tuple(int(s) for s in image_shape))
    chunks = tuple(_chunked(x, chunk) for x in (masks, boxes, valid))
    return jax.lax.scan(paste_max, zeros, chunks)[0]


def masks_and_foreground(maps, boxes, valid, predict_masks, image_shape, chunk=DETECTION_CHUNK):
    """Mask probabilities of detections and the foreground map, image by image.

    maps: pyramid levels [(B, H_l, W_l, C)]; boxes (B, D, 4), valid (B, D) bool, valid ones
    first (detections come in descending score); predict_masks: ROI features (n, 14, 14, C)
    -> mask logits (n, 28, 28). Returns masks (B, D, 28, 28), 0 for invalid slots, and
    foreground (B, H, W).
    Images go one at a time (lax.map, not vmap) so that lax.cond really skips the chunks of
    `chunk` detections that hold no valid one: with 500 slots and 40 nuclei the mask head runs
    on 64 ROIs, not 500 (it is the costliest part of inference).
    """
    num, size = boxes.shape[1], 2 * MASK_POOL
    chunk = max(1, min(chunk, num))
    strides = fpn.level_strides(len(maps))

    def one_image(args):
        image_maps, image_boxes, image_valid = args

        def run(rois):
            features = roi_align.multilevel_roi_align(image_maps, rois, MASK_POOL, strides)
            return jax.nn.sigmoid(predict_masks(features))

        def chunk_masks(pair):
            rois, ok = pair
            skip = lambda rois: jnp.zeros_like(rois, shape=(chunk, size, size))
            return jax.lax.cond(jnp.any(ok), run, skip, rois)

        pairs = (_chunked(image_boxes, chunk), _chunked(image_valid, chunk))
        masks = jax.lax.map(chunk_masks, pairs).reshape(-1, size, size)[:num]
        masks = jnp.where(image_valid[:, None, None], masks, 0.0)  # padding slots hold 0
        return masks, foreground_map(masks, image_boxes, image_valid, image_shape, chunk)

    return jax.lax.map(one_image, (maps, boxes, valid))


__all__ = [
    "BoxHead",
    "MaskHead",
    "RPNHead",
    "foreground_map",
    "masks_and_foreground",
    "pool",
]
