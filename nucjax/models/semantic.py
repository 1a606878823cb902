"""The ModelSpec shared by per-pixel networks (Simple CNN, U-Net, ResNet segmentation).

A semantic network maps image (B, H, W, 3) to logits (B, H, W, C):
  model.target = "three_class": C = 3 (background, nucleus interior, nucleus border);
  model.target = "binary":      C = 1 (nucleus foreground), border pixels optionally weighted.
model.output_activation chooses how logits become probabilities and which loss trains them:
"sigmoid" (per-channel binary cross-entropy, the paper's choice) or "softmax" (cross-entropy).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nucjax import losses, metrics, postprocess, targets
from nucjax.models.spec import Instances, ModelSpec

TARGET_CHANNELS = {"three_class": 3, "binary": 1}


def num_classes(model_config) -> int:
    """Output channels for `model_config.target`; a clear error for an unknown target."""
    if model_config.target not in TARGET_CHANNELS:
        raise ValueError(
            f"config.model.target={model_config.target!r}; choose one of {sorted(TARGET_CHANNELS)}"
        )
    return TARGET_CHANNELS[model_config.target]


def probabilities(logits: jax.Array, target: str, activation: str) -> jax.Array:
    """logits (..., C) -> probabilities (..., C). Three-class sigmoid outputs are renormalised."""
    if target == "three_class" and activation == "softmax":
        return jax.nn.softmax(logits, axis=-1)
    probs = jax.nn.sigmoid(logits)
    if target == "three_class":
        probs = probs / jnp.maximum(jnp.sum(probs, axis=-1, keepdims=True), 1e-6)
    return probs


def foreground_probability(logits: jax.Array, target: str, activation: str) -> jax.Array:
    """logits (B, H, W, C) -> (B, H, W) probability that a pixel belongs to a nucleus."""
    probs = probabilities(logits, target, activation)
    return probs[..., 0] if target == "binary" else 1.0 - probs[..., 0]


def soft_dice_sums(fg_prob, label, valid, weight: float):
    """Soft Dice loss of each image's foreground, as (weight * sum of (1 - Dice), images).

    fg_prob: (B, H, W) foreground probability; label: (B, H, W) (-1 not labelled); valid:
    (B,). Dice = (2 |p t| + 1) / (|p| + |t| + 1) over the image's labelled pixels; per image,
    so the pair is exact under any split of the batch across devices.
    """
    keep = (label >= 0).astype(jnp.float32)
    truth = (label > 0).astype(jnp.float32)
    inter = jnp.sum(fg_prob * truth * keep, axis=(1, 2))
    total = jnp.sum((fg_prob + truth) * keep, axis=(1, 2))
    dice = (2.0 * inter + 1.0) / (total + 1.0)
    return weight * jnp.sum((1.0 - dice) * valid), jnp.sum(valid)


def semantic_loss(
    logits, batch, *, target: str, activation: str, border_weight: float, dice_weight: float
):
    """(logits (B,H,W,C), batch) -> ({"pixel_ce": (sum, count)[, "dice": ...]}, pixel metrics).

    dice_weight > 0 adds soft_dice_sums of the foreground probability (BCE + Dice)."""
    label = batch["label"]
    weight = targets.pixel_weights(label) * batch["valid"][:, None, None]
    count = jnp.sum(weight)
    if target == "three_class":
        classes = targets.three_class_targets(label)
        if activation == "softmax":
            term = losses.softmax_cross_entropy_sums(logits, classes, weight, count)
        else:
            one_hot = jax.nn.one_hot(classes, 3, dtype=jnp.float32)
            term = losses.sigmoid_cross_entropy_sums(logits, one_hot, weight, count)
    else:
        fg, fg_weight = targets.binary_targets(label, border_weight)
        fg_weight = fg_weight * batch["valid"][:, None, None]
        term = losses.sigmoid_cross_entropy_sums(logits, fg[..., None], fg_weight, count)
    fg_prob = foreground_probability(logits, target, activation)
    terms = {"pixel_ce": term}
    if dice_weight > 0:
        terms["dice"] = soft_dice_sums(fg_prob, label, batch["valid"], dice_weight)
    return terms, metrics.pixel_sums(fg_prob, label, batch["valid"])


def semantic_postprocess(
    logits: np.ndarray,
    seeds: Instances | None = None,
    *,
    target: str,
    activation: str,
    eval_config,
):
    """logits (H, W, C) of one image -> Instances (watershed; thresholds from config.eval).

    seeds: another model's nuclei of the image (config.eval.seeds_from; three-class only):
    those scored at least eval.seed_min_score seed the watershed
    (postprocess.instances_from_three_class_seeded)."""
    probs = np.asarray(probabilities(jnp.asarray(logits), target, activation))
    common = dict(
        foreground_threshold=eval_config.foreground_threshold,
        min_size=eval_config.min_size,
        fill_holes=eval_config.fill_holes,
        max_hole_size=eval_config.max_hole_size,
    )
    if seeds is not None:
        if target != "three_class":
            raise ValueError("config.eval.seeds_from needs a three-class per-pixel model")
        return postprocess.instances_from_three_class_seeded(
            probs,
            postprocess.confident(seeds, eval_config.seed_min_score),
            seed_erosion=eval_config.seed_erosion,
            seed_foreground_threshold=eval_config.seed_foreground_threshold,
            **common,
        )
    if target == "three_class":
        return postprocess.instances_from_three_class(
            probs, seed_threshold=eval_config.seed_threshold, **common
        )
    return postprocess.instances_from_binary(
        probs[..., 0], seed_depth=eval_config.seed_depth, **common
    )


def build_spec(module, config, *, stride: int, axis_name: str | None) -> ModelSpec:
    """The ModelSpec of a per-pixel network `module` (image -> logits) under `config`.

    `module` must already use `axis_name` for its batch norm; the spec records it for the
    trainer.
    """
    m = config.model
    num_classes(m)
    kinds = dict(target=m.target, activation=m.output_activation)
    if m.output_activation not in ("sigmoid", "softmax"):
        raise ValueError(
            f"config.model.output_activation={m.output_activation!r}; use sigmoid or softmax"
        )
    return ModelSpec(
        module=module,
        loss=functools.partial(
            semantic_loss, border_weight=m.border_weight, dice_weight=m.dice_weight, **kinds
        ),
        foreground=functools.partial(foreground_probability, **kinds),
        postprocess=functools.partial(semantic_postprocess, eval_config=config.eval, **kinds),
        stride=stride,
        axis_name=axis_name,
        seedable=m.target == "three_class",
    )


__all__ = ["Instances", "build_spec", "foreground_probability", "num_classes", "probabilities"]
