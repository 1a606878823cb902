"""One trainer for every model: state, the data-parallel step, evaluation and the loop.

The trainer never asks which network it runs. `nucjax.models.build(config)` gives a ModelSpec
(module, loss, foreground map, post-processing) and the trainer only uses that.

The step is one XLA program per device, written with `jax.shard_map` under `jax.jit` over a
1-D `data` mesh: the per-device batch slice runs forward and backward and every loss term is
divided by its *global* count (a psum of the counts). Gradients are NOT psum'd: the
parameters enter shard_map replicated, so its autodiff already sums their cotangents over the
devices, and an explicit psum would multiply the gradient by the device count (the bug the
1-vs-4-device test caught). The result equals a single-device step on the whole batch.

Evaluation (nucjax.evaluators) runs every `train.eval_every_steps` steps and at the end, the
same evaluators --mode=evaluate uses; its scalars go to metrics.jsonl and TensorBoard.
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
import optax
from absl import logging
from jax import lax
from jax.sharding import PartitionSpec as P

from nucjax import (
    checkpoint,
    config_checks,
    evaluators,
    models,
    optim,
    outputs,
    parallel,
    preemption,
    reporting,
)
from nucjax import workdir as workdirs
from nucjax.models.spec import ModelSpec
from nucjax.preemption import Preempted


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
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    init = jax.jit(lambda k: spec.init_variables(k, config.data.crop_size))
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


def make_optimizer(spec: ModelSpec, config, total_steps: int) -> optax.GradientTransformation:
    """config.optim's optimizer; holds a pretrained backbone fixed for
    config.model.freeze_backbone_steps when the spec can freeze one."""
    freeze = config.model.freeze_backbone_steps if spec.frozen is not None else 0
    return optim.make_optimizer(config.optim, total_steps, spec.frozen, freeze)


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


def add_sums(a, b):
    return b if a is None else jax.tree.map(jnp.add, a, b)


def means(sums) -> dict[str, float]:
    """{name: (sum, count)} (device or host) -> {name: sum / count} as Python floats."""
    host = jax.device_get(sums)
    return {k: float(s) / max(float(c), 1e-12) for k, (s, c) in host.items()}


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


def first_device_variables(state: TrainState) -> dict[str, Any]:
    """The replicated {"params", "batch_stats"} as arrays on this process's first device (what
    evaluators and whole-image prediction take), without a copy through the host."""
    return jax.tree.map(lambda x: x.addressable_shards[0].data, state.variables)


def run_evaluators(config, spec: ModelSpec, state, step: int, writer) -> dict[str, dict]:
    """Every evaluator of evaluators.for_training; writes their scalars, returns them."""
    results = {}
    variables = first_device_variables(state)
    for evaluator in evaluators.for_training(config):
        scalars = evaluators.scalars(evaluator.run(config, spec, variables))
        writer.write(step, f"eval_{evaluator.name}", scalars)
        results[evaluator.name] = scalars
    shown = {n: {k: round(v, 4) for k, v in r.items() if "/" not in k} for n, r in results.items()}
    logging.info("step %d evaluation: %s", step, json.dumps(shown))
    return results


class _Run:
    """What one call of train_and_evaluate sets up: spec, mesh, state, checkpointer, writer."""

    def __init__(self, config, workdir: str):
        from nucjax import data

        self.spec = models.build(config)
        # Before anything compiles: a bad value fails here, naming its field, not inside XLA.
        config_checks.check_training(config, self.spec.stride)
        self.mesh = parallel.make_mesh()
        parallel.check_batch_size(config.train.batch_size, self.mesh)
        # The first touch of the data set may fetch and build it: process 0 alone does that.
        self.num_train = parallel.process_0_first(
            "nucjax: data prepared", lambda: data.num_examples(config.data, "train")
        )
        self.steps = total_steps(config, self.num_train)
        self.tx = make_optimizer(self.spec, config, self.steps)
        state = init_state(self.spec, self.tx, config, self.mesh)
        self.meta = checkpoint.describe(config.model.name, state.params)
        self.ckpt = checkpoint.Checkpointer(
            workdirs.checkpoint_dir(workdir),
            every_steps=config.train.checkpoint_every_steps,
            keep=config.train.keep_checkpoints,
        )
        if workdirs.saved_config(workdir) is not None:
            # Resuming under a config that builds another network (another input view,
            # activation, ...) would train on silently; the shape check below cannot see it.
            workdirs.resolve_config(workdir, config)
        self.state, restored = self.ckpt.restore(state, self.meta)
        self.start = int(jax.device_get(self.state.step))
        if restored is not None:
            logging.info("resuming from step %d of %d", self.start, self.steps)
        self.primary = jax.process_index() == 0
        self.writer = reporting.MetricWriter(workdir, enabled=self.primary)
        if self.primary:
            workdirs.save_config(workdir, config)

    def summary(self, config, times: dict[str, float], results: dict) -> dict[str, Any]:
        return {
            "model": config.model.name,
            "steps": self.steps,
            "resumed_from": self.start,
            "devices": self.mesh.devices.size,
            **times,
            "final_eval": results,
            "checkpoints": self.ckpt.directory,
            "metrics": self.writer.path,
        }


def _default_batches(config, start: int) -> Iterator:
    from nucjax.data import pipeline

    return pipeline.train_batches(
        config.data,
        batch_size=config.train.batch_size,
        seed=config.seed,
        start_step=start,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def _compiled_everywhere(train_step, state, batch):
    """The jitted step compiled for these arguments; on several processes, returned once every
    process has compiled it. Processes compile at their own pace (on a loaded machine tens of
    seconds apart), and the step's first collective must find them all within gloo's 30 s."""
    compiled = train_step.lower(state, batch).compile()
    parallel.sync_processes("nucjax: train step compiled")
    return compiled


def _log_train(step: int, pending, ckpt: checkpoint.Checkpointer, writer, bar) -> None:
    """Write the mean metrics since the last log; stop if any is not finite."""
    scalars = means(pending)
    _check_finite(step, scalars, ckpt)
    writer.write(step, "train", scalars)
    bar.set_postfix({k: f"{scalars[k]:.4g}" for k in ("loss",) if k in scalars}, refresh=False)


def train_and_evaluate(config, workdir: str, batches: Iterator | None = None) -> dict[str, Any]:
    """Train `config` in `workdir`, resuming from its latest checkpoint. Returns the summary.

    batches: an iterator of host batches (see nucjax.models.spec) to train on instead of the
    tf.data pipeline; it must start at the state's step (the default pipeline does).
    Raises Preempted after SIGTERM or SIGINT, with a checkpoint at the step it names
    (nucjax.preemption); running again resumes there.
    """
    run = _Run(config, workdir)
    batches = batches if batches is not None else _default_batches(config, run.start)
    train_step = make_train_step(run.spec, run.tx, run.mesh)
    eval_every = config.train.eval_every_steps or math.ceil(run.num_train / config.train.batch_size)
    state, ckpt, steps = run.state, run.ckpt, run.steps
    bar = reporting.progress(steps, "train", "step", initial=run.start)
    pending, t_start, t_first, results = None, time.perf_counter(), None, {}
    with preemption.stop_signals() as stop:
        try:
            for step in range(run.start + 1, steps + 1):
                batch = parallel.shard_batch(next(batches), run.mesh)
                if step == run.start + 1:
                    train_step = _compiled_everywhere(train_step, state, batch)
                state, sums = train_step(state, batch)
                pending = add_sums(pending, sums)
                if t_first is None:  # the first step includes compilation
                    jax.block_until_ready(state.step)
                    t_first = time.perf_counter()
                # Read the flag once per step so that logging, saving and stopping agree on it.
                stopping = stop.signum is not None and step < steps
                saving = ckpt.due(step) or step == steps or stopping
                if step % config.train.log_every_steps == 0 or saving:
                    _log_train(step, pending, ckpt, run.writer, bar)
                    pending = None
                bar.update(step - bar.n)
                if saving:
                    ckpt.save(step, state, run.meta)
                if stopping:  # no evaluation: a scheduler's grace period is short
                    ckpt.wait()
                    raise preemption.Preempted(step, stop.signum, ckpt.directory)
                if step % eval_every == 0 or step == steps:
                    results = run_evaluators(config, run.spec, state, step, run.writer)
            jax.block_until_ready(state)
        finally:
            # On any exit, let a checkpoint being written finish: nothing half-written survives.
            bar.close()
            ckpt.wait()
            ckpt.close()
            run.writer.close()
    t_end = time.perf_counter()
    times = {
        "wall_clock_s": t_end - t_start,
        "compile_and_first_step_s": (t_first - t_start) if t_first else 0.0,
        "train_s_excluding_compile": (t_end - t_first) if t_first else 0.0,
    }
    summary = run.summary(config, times, results)
    if run.primary:
        outputs.write_text(
            os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2) + "\n"
        )
    return summary


__all__ = [
    "Preempted",
    "TrainState",
    "init_state",
    "make_optimizer",
    "make_train_step",
    "run_evaluators",
    "train_and_evaluate",
]
