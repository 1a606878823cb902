"""One trainer for every model: state, the data-parallel step, evaluation and the loop.

The trainer never asks which network it runs. `nucjax.models.build(config)` gives a ModelSpec
(module, loss, foreground map, post-processing) and the trainer only uses that.

The step is one XLA program per device, written with `jax.shard_map` under `jax.jit` over a
1-D `data` mesh: the per-device batch slice runs forward and backward, gradients are summed
with `lax.psum` and every loss term is divided by its *global* count, so the result equals a
single-device step on the whole batch, whatever the number of devices.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax import lax
from jax.sharding import PartitionSpec as P

from nucjax import checkpoint, metrics, models, optim, parallel, reporting
from nucjax.models.spec import ModelSpec


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training; a plain pytree, checkpointed whole.

    rng: raw uint32 key (the default PRNG implementation's shape); the step's key is
        fold_in(rng, step), so resuming replays it.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def init_state(spec: ModelSpec, tx, config, mesh) -> TrainState:
    """A fresh state for `spec`, replicated over `mesh`, initialised on a dummy crop."""
    size = -(-config.data.crop_size // spec.stride) * spec.stride
    image = jnp.zeros((1, size, size, 3), jnp.float32)
    label = jnp.zeros((1, size, size), jnp.int32)
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))

    init = jax.jit(
        lambda k: spec.module.init({"params": k, "dropout": k}, image, label, train=False)
    )
    variables = spec.prepare_variables(init(init_key))

    @jax.jit
    def make_state(variables):
        return TrainState(
            step=jnp.zeros([], jnp.int32),
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(variables["params"]),
            rng=state_key,
        )

    return parallel.replicate(make_state(variables), mesh)


def _global_ratio(pairs: Mapping[str, tuple], axis: str) -> dict[str, jax.Array]:
    """{name: (sum, count)} on each device -> {name: psum(sum) / max(psum(count), 1)}."""
    return {
        k: lax.psum(s, axis) / jnp.maximum(lax.psum(c, axis), 1.0) for k, (s, c) in pairs.items()
    }


def _sums(pairs: Mapping[str, tuple], axis: str) -> dict[str, tuple]:
    return {k: (lax.psum(s, axis), lax.psum(c, axis)) for k, (s, c) in pairs.items()}


def make_train_step(spec: ModelSpec, tx: optax.GradientTransformation, mesh):
    """(state, global batch) -> (state, metric sums), compiled once, state donated.

    Metric sums: {name: (sum, count)} over the global batch, names "loss", each loss term,
    and the model's metrics.
    """
    axis = spec.axis_name

    def per_device(state: TrainState, batch):
        key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), lax.axis_index(axis))
        dropout_key, sample_key = jax.random.split(key)

        def objective(params):
            outputs, mutated = spec.module.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["image"],
                batch["label"],
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": dropout_key, "sample": sample_key},
            )
            terms, metrics = spec.loss(outputs, batch)
            counts = {k: lax.stop_gradient(lax.psum(c, axis)) for k, (_, c) in terms.items()}
            local = sum(s / jnp.maximum(counts[k], 1.0) for k, (s, _) in terms.items())
            return local, (terms, metrics, mutated)

        # params are replicated (invariant over `axis`), so shard_map's autodiff already sums
        # their cotangents across devices: these are the global gradients, no psum needed.
        grads, (terms, metrics, mutated) = jax.grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=mutated.get("batch_stats", state.batch_stats),
            opt_state=opt_state,
        )
        loss = sum(_global_ratio(terms, axis).values())
        sums = {"loss": (loss, jnp.ones([])), **_sums(terms, axis), **_sums(metrics, axis)}
        return new_state, sums

    step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(axis)), out_specs=(P(), P()))
    return jax.jit(step, donate_argnums=0)


def make_eval_step(spec: ModelSpec, mesh):
    """(state, global batch) -> {name: (sum, count)} pixel metrics over the global batch."""
    axis = spec.axis_name

    def per_device(state: TrainState, batch):
        outputs = spec.module.apply(state.variables, batch["image"], train=False)
        sums = metrics.pixel_sums(spec.foreground(outputs), batch["label"], batch["valid"])
        return _sums(sums, axis)

    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(axis)), out_specs=P()))


def add_sums(a, b):
    return b if a is None else jax.tree.map(jnp.add, a, b)


def means(sums) -> dict[str, float]:
    """{name: (sum, count)} (device or host) -> {name: sum / count} as Python floats."""
    host = jax.device_get(sums)
    return {k: float(s) / max(float(c), 1e-12) for k, (s, c) in host.items()}


def evaluate_pixels(eval_step, state, batches: Iterator, mesh) -> dict[str, float]:
    """Pixel metrics of `state` over every batch of `batches` (padded batches count exactly)."""
    total = None
    for batch in batches:
        total = add_sums(total, eval_step(state, parallel.shard_batch(batch, mesh)))
    return means(total) if total is not None else {}


def total_steps(config, num_train_examples: int) -> int:
    """config.train.num_steps if > 0, else epochs x ceil(examples / global batch)."""
    if config.train.num_steps > 0:
        return int(config.train.num_steps)
    return int(config.train.num_epochs * math.ceil(num_train_examples / config.train.batch_size))


def _check_finite(step: int, scalars: dict[str, float], ckpt: checkpoint.Checkpointer) -> None:
    bad = {k: v for k, v in scalars.items() if not math.isfinite(v)}
    if bad:
        ckpt.wait()
        raise FloatingPointError(
            f"non-finite training metrics by step {step}: {bad}. Training stopped; the last "
            f"good checkpoint is step {ckpt.latest_step()} in {ckpt.directory}. Try a lower "
            "--config.optim.learning_rate or --config.optim.grad_clip_norm."
        )


def train_and_evaluate(config, workdir: str, batches: Iterator | None = None) -> dict[str, Any]:
    """Train `config` in `workdir`, resuming from its latest checkpoint. Returns the summary.

    batches: an iterator of host batches (see nucjax.models.spec) to train on instead of the
    tf.data pipeline; it must start at the state's step (the default pipeline does).
    """
    from nucjax import data
    from nucjax.data import pipeline

    spec = models.build(config)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    parallel.check_batch_size(config.train.eval_batch_size, mesh, "config.train.eval_batch_size")
    num_train = data.num_examples(config.data, "train")
    steps = total_steps(config, num_train)
    tx = optim.make_optimizer(
        config.optim, steps, spec.frozen, config.model.get("freeze_backbone_steps", 0)
    )
    state = init_state(spec, tx, config, mesh)
    meta = checkpoint.describe(config.model.name, state.params)
    ckpt = checkpoint.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        every_steps=config.train.checkpoint_every_steps,
        keep=config.train.keep_checkpoints,
    )
    state, restored = ckpt.restore(state, meta)
    start = int(jax.device_get(state.step))
    if restored is not None:
        logging.info("resuming from step %d of %d", start, steps)
    primary = jax.process_index() == 0
    writer = reporting.MetricWriter(workdir, enabled=primary)
    if primary:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    if batches is None:
        batches = pipeline.train_batches(
            config.data,
            batch_size=config.train.batch_size,
            seed=config.seed,
            start_step=start,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    train_step = make_train_step(spec, tx, mesh)
    eval_step = make_eval_step(spec, mesh)
    steps_per_epoch = math.ceil(num_train / config.train.batch_size)
    eval_every = config.train.eval_every_steps or steps_per_epoch

    def run_eval(step: int) -> dict[str, dict[str, float]]:
        results = {}
        for split, limit in (("train", config.train.eval_train_images), ("validation", 0)):
            it = pipeline.eval_batches(
                config.data,
                split,
                batch_size=config.train.eval_batch_size,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                max_images=limit,
            )
            results[split] = evaluate_pixels(eval_step, state, it, mesh)
            writer.write(step, f"eval_{split}", results[split])
        logging.info("step %d evaluation: %s", step, json.dumps(results))
        return results

    progress = reporting.ProgressBar(steps, initial=start)
    pending, compile_s, t_start, t_first = None, 0.0, time.perf_counter(), None
    results: dict[str, Any] = {}
    try:
        for step in range(start + 1, steps + 1):
            batch = parallel.shard_batch(next(batches), mesh)
            state, sums = train_step(state, batch)
            pending = add_sums(pending, sums)
            if t_first is None:
                jax.block_until_ready(state.step)
                t_first = time.perf_counter()
                compile_s = t_first - t_start
            if step % config.train.log_every_steps == 0 or step == steps or ckpt.due(step):
                scalars = means(pending)
                pending = None
                _check_finite(step, scalars, ckpt)
                writer.write(step, "train", scalars)
                shown = {k: scalars[k] for k in ("loss", "foreground_iou") if k in scalars}
                progress.update(step, shown)
            if ckpt.due(step) or step == steps:
                ckpt.save(step, state, meta)
            if step % eval_every == 0 or step == steps:
                results = run_eval(step)
        jax.block_until_ready(state)
    finally:
        # On any exit, let a checkpoint being written finish: nothing half-written survives.
        ckpt.wait()
        ckpt.close()
        writer.close()
    t_end = time.perf_counter()
    summary = {
        "model": config.model.name,
        "steps": steps,
        "resumed_from": start,
        "devices": mesh.devices.size,
        "wall_clock_s": t_end - t_start,
        "compile_and_first_step_s": compile_s,
        "train_s_excluding_compile": (t_end - t_first) if t_first else 0.0,
        "final_eval": results,
        "checkpoints": ckpt.directory,
        "metrics": writer.path,
    }
    if primary:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def numpy_params(state: TrainState):
    """The parameters as host numpy arrays (for comparisons and export)."""
    return jax.tree.map(np.asarray, jax.device_get(state.params))


__all__ = [
    "TrainState",
    "evaluate_pixels",
    "init_state",
    "make_eval_step",
    "make_train_step",
    "train_and_evaluate",
]
