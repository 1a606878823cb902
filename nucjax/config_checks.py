"""Range checks of a config's numeric fields, run before anything is built or compiled.

A value out of range otherwise surfaces much later and far from its cause: a negative learning
rate trains and diverges, `log_every_steps=0` is a ZeroDivisionError inside the loop,
`keep_checkpoints=0` deletes every checkpoint, and a crop that is not a multiple of the
network's stride is a shape error deep inside XLA. Each check names the field, the value and
what is allowed, as one ConfigError.

Fields a model's config does not have (Mask R-CNN's thresholds, the U-Net's dropout) are
skipped; a sequence field (dropout per level) has each element checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class ConfigError(ValueError):
    """A config field holds a value outside what it allows."""


class Rule(NamedTuple):
    field: str  # dotted path, e.g. "optim.learning_rate"
    ok: Callable[[float], bool]  # written so that NaN fails every rule
    allowed: str


def _at_least(low: float) -> tuple[Callable[[float], bool], str]:
    return (lambda v: v >= low), f">= {low}"


def _above(low: float) -> tuple[Callable[[float], bool], str]:
    return (lambda v: v > low), f"> {low}"


_UNIT = (lambda v: 0 <= v <= 1), "in [0, 1]"
_UNIT_OPEN = (lambda v: 0 <= v < 1), "in [0, 1)"

RULES = tuple(
    Rule(field, *check)
    for field, check in (
        ("train.batch_size", _at_least(1)),
        ("train.num_steps", _at_least(0)),
        ("train.num_epochs", _at_least(0)),
        ("train.log_every_steps", _at_least(1)),
        ("train.eval_every_steps", _at_least(0)),
        ("train.checkpoint_every_steps", _at_least(0)),
        ("train.keep_checkpoints", _at_least(1)),
        ("train.max_minutes", _at_least(0)),
        ("optim.learning_rate", _above(0)),
        ("optim.warmup_steps", _at_least(0)),
        ("optim.weight_decay", _at_least(0)),
        ("optim.grad_clip_norm", _at_least(0)),
        ("optim.eps", _above(0)),
        ("optim.momentum", _UNIT),
        ("optim.rho", _UNIT),
        ("data.validation_fraction", _UNIT_OPEN),
        ("data.modality_balance", _at_least(0)),
        ("data.scale_jitter", _UNIT_OPEN),  # zoom in [1 - s, 1 + s] must stay positive
        ("data.intensity_jitter", _UNIT),
        ("data.blur", _at_least(0)),
        ("data.noise", _at_least(0)),
        ("data.max_instances", _at_least(1)),
        ("data.prefetch", _at_least(0)),
        ("data.synthetic_brightfield_fraction", _UNIT),
        ("model.dropout", _UNIT_OPEN),
        ("model.rpn_positive_fraction", _UNIT),
        ("model.roi_positive_fraction", _UNIT),
        ("model.rpn_nms_threshold", _UNIT),
        ("model.input_scale", _at_least(1)),
        ("eval.max_images", _at_least(0)),
        ("eval.train_images", _at_least(0)),
        ("eval.summary_images", _at_least(0)),
        ("eval.tile_size", _at_least(1)),
        ("eval.tile_overlap", _at_least(0)),
        ("eval.nucleus_area", _at_least(0)),
        ("eval.min_scale", _above(0)),
        ("eval.foreground_threshold", _UNIT),
        ("eval.seed_threshold", _UNIT),
        ("eval.seed_min_score", _UNIT),
        ("eval.seed_foreground_threshold", _UNIT),
        ("eval.seed_depth", _at_least(0)),
        ("eval.min_size", _at_least(0)),
        ("eval.max_hole_size", _at_least(0)),
        ("eval.score_threshold", _UNIT),
        ("eval.nms_threshold", _UNIT),
        ("eval.mask_threshold", _UNIT),
        ("eval.max_detections", _at_least(1)),
    )
)


def _lookup(config, field: str) -> Any:
    """config's value at the dotted `field`, or None where the config has no such field."""
    node = config
    for part in field.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def _fail(field: str, value, allowed: str) -> None:
    raise ConfigError(f"config.{field}={value!r} is out of range: it must be {allowed}")


def check_ranges(config) -> None:
    """Raise ConfigError for the first field of RULES, or pair of fields, out of range."""
    for rule in RULES:
        value = _lookup(config, rule.field)
        values = value if isinstance(value, (tuple, list)) else [value]
        for v in values:
            if v is not None and not (isinstance(v, (int, float)) and rule.ok(v)):
                _fail(rule.field, value, rule.allowed)
    ev = config.eval
    if not ev.tile_overlap < ev.tile_size:
        _fail("eval.tile_overlap", ev.tile_overlap, f"< eval.tile_size ({ev.tile_size})")
    if not ev.min_scale <= ev.max_scale:
        _fail("eval.max_scale", ev.max_scale, f">= eval.min_scale ({ev.min_scale})")


def check_training(config, stride: int) -> None:
    """check_ranges, and the crop size against the network's stride (ModelSpec.stride)."""
    check_ranges(config)
    crop = config.data.crop_size
    if not (isinstance(crop, int) and crop >= 1 and crop % stride == 0):
        below = max(stride, crop // stride * stride) if isinstance(crop, int) else stride
        _fail(
            "data.crop_size",
            crop,
            f"a positive multiple of the network's stride {stride} (e.g. {below})",
        )
