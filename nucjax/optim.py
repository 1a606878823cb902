"""optax optimizers from `config.optim`, mapped to the paper's Table 2.

Simple CNN: adam, lr 0.1     ResNet: adadelta, lr 0.1
U-Net:      adam, lr 0.01    Mask R-CNN: sgd (momentum), lr 0.01
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine", "warmup_cosine")
OPTIMIZERS = ("adam", "adamw", "adadelta", "sgd")


def learning_rate_schedule(optim_config, total_steps: int) -> optax.Schedule:
    """The learning rate as a function of the step, from `optim.schedule`."""
    c = optim_config
    total_steps = max(int(total_steps), 1)
    if c.schedule == "constant":
        schedule = optax.constant_schedule(c.learning_rate)
        if c.warmup_steps > 0:
            warmup = optax.linear_schedule(0.0, c.learning_rate, c.warmup_steps)
            schedule = optax.join_schedules([warmup, schedule], [c.warmup_steps])
        return schedule
    if c.schedule == "cosine":
        return optax.cosine_decay_schedule(c.learning_rate, total_steps)
    if c.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, c.learning_rate, max(c.warmup_steps, 1), max(total_steps, c.warmup_steps + 1)
        )
    raise ValueError(f"config.optim.schedule={c.schedule!r}; choose one of {SCHEDULES}")


def _base_optimizer(c, lr: optax.Schedule) -> optax.GradientTransformation:
    if c.name == "adam":
        return optax.adam(lr, eps=c.eps)
    if c.name == "adamw":
        return optax.adamw(lr, eps=c.eps, weight_decay=c.weight_decay)
    if c.name == "adadelta":
        return optax.adadelta(lr, rho=c.rho, eps=c.eps)
    if c.name == "sgd":
        return optax.sgd(lr, momentum=c.momentum or None, nesterov=c.nesterov)
    raise ValueError(f"config.optim.name={c.name!r}; choose one of {OPTIMIZERS}")


def freeze_until(steps: int, frozen: Callable[[Any], Any]) -> optax.GradientTransformation:
    """Zero the gradients of the leaves where `frozen(params)` is True for the first `steps` steps.

    Used to keep a pretrained backbone fixed while a fresh head settles.
    """

    def init_fn(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        mask = frozen(updates if params is None else params)
        keep = state.count >= steps
        updates = jax.tree.map(
            lambda u, m: jnp.where(jnp.logical_and(m, jnp.logical_not(keep)), 0.0, u), updates, mask
        )
        return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(
    optim_config, total_steps: int, frozen: Callable[[Any], Any] | None = None, freeze_steps=0
) -> optax.GradientTransformation:
    """The full gradient transformation: [freeze] -> [clip] -> [L2 decay] -> optimizer."""
    c = optim_config
    parts = []
    if frozen is not None and freeze_steps > 0:
        parts.append(freeze_until(freeze_steps, frozen))
    if c.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(c.grad_clip_norm))
    if c.weight_decay > 0 and c.name != "adamw":
        parts.append(optax.add_decayed_weights(c.weight_decay))
    parts.append(_base_optimizer(c, learning_rate_schedule(c, total_steps)))
    return optax.chain(*parts)
