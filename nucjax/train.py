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

import contextlib
import dataclasses
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
    augment,
    budget,
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
from nucjax.models.spec import ModelSpec, cast_floats
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


def initial_variables(path: str, model_name: str, fresh: dict[str, Any]) -> dict[str, Any]:
    """The variables of the trained model at `path` (config.train.init_from: a workdir or a
    model bundle), to fine-tune in place of `fresh` (a freshly initialised tree of the same
    network: same parameter names and shapes; its input view may differ).

    Raises config_checks.ConfigError (a ValueError) naming config.train.init_from when `path`
    holds no trained model or one of another shape."""
    field = f"config.train.init_from={path!r}"
    try:
        trained = workdirs.load(path)
    except (OSError, ValueError) as e:  # no checkpoint, damaged, a bad bundle, ...
        raise config_checks.ConfigError(f"{field}: {e}") from None
    try:
        checkpoint.check_compatible(
            checkpoint.describe(trained.config.model.name, trained.variables["params"]),
            checkpoint.describe(model_name, fresh["params"]),
            path,
        )
    except checkpoint.IncompatibleCheckpointError as e:
        raise config_checks.ConfigError(f"{field}: {e}") from None
    logging.info("starting from the step-%d model of %s", trained.step, path)
    return {k: trained.variables.get(k, v) for k, v in fresh.items()}


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


# fold_in data for the augmentation key; device keys fold in axis indices 0, 1, 2, ...
_AUGMENT_STREAM = 2**31 - 1


def make_train_step(spec: ModelSpec, tx: optax.GradientTransformation, mesh, augment=None):
    """(state, global batch) -> (state, metric sums), compiled once, state donated.

    Metric sums: {name: (sum, count)} over the global batch, names "loss", each loss term,
    and the model's metrics. augment: None or nucjax.augment.photometric(config.data), applied
    to the images on the device before the model sees them.
    """
    axis, compute = spec.axis_name, spec.compute_dtype

    def per_device(state: TrainState, batch):
        step_key = jax.random.fold_in(state.rng, state.step)
        key = jax.random.fold_in(step_key, lax.axis_index(axis))
        dropout_key, sample_key = jax.random.split(key)
        if augment is not None:  # keyed by global example index: the same on any device count
            local = batch["image"].shape[0]
            images = augment(
                jax.random.fold_in(step_key, _AUGMENT_STREAM),
                batch["image"],
                lax.axis_index(axis) * local,
            )
            batch = {**batch, "image": images}

        def objective(params):
            # Mixed precision (spec.compute_dtype): the cast is inside the differentiated
            # function, so gradients arrive float32, for float32 parameters.
            outputs, mutated = spec.module.apply(
                {"params": cast_floats(params, compute), "batch_stats": state.batch_stats},
                cast_floats(batch["image"], compute),
                batch["label"],
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": dropout_key, "sample": sample_key},
            )
            outputs, mutated = cast_floats((outputs, mutated), jnp.float32)
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


@dataclasses.dataclass
class _Progress:
    """What the step loop has done so far; the summary reads it."""

    last: int  # the last step run
    pending: Any = None  # metric sums since the last log
    results: dict = dataclasses.field(default_factory=dict)  # the latest evaluation's scalars
    t_first: float | None = None  # perf_counter() once the first step (and compiling) finished


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
        per_epoch = math.ceil(self.num_train / config.train.batch_size)
        self.eval_every = config.train.eval_every_steps or per_epoch
        self.tx = make_optimizer(self.spec, config, self.steps)
        self._restore(config, workdir, init_state(self.spec, self.tx, config, self.mesh))
        self.primary = jax.process_index() == 0
        self.writer = reporting.MetricWriter(workdir, enabled=self.primary, start_step=self.start)
        if self.primary:
            workdirs.save_config(workdir, config)

    def _restore(self, config, workdir: str, fresh: TrainState) -> None:
        """Sets self.state to workdir's latest checkpoint (else `fresh`, with the weights of
        config.train.init_from when set: read only when there is nothing to resume), self.start
        to its step and self.train_seconds to the training seconds it had spent
        (nucjax.budget)."""
        self.meta = checkpoint.describe(config.model.name, fresh.params)
        self.ckpt = checkpoint.Checkpointer(
            workdirs.checkpoint_dir(workdir),
            every_steps=config.train.checkpoint_every_steps,
            keep=config.train.keep_checkpoints,
        )
        if workdirs.saved_config(workdir) is not None:
            # Resuming under a config that builds another network (another input view,
            # activation, ...) would train on silently; the shape check below cannot see it.
            workdirs.resolve_config(workdir, config)
        self.state, restored = self.ckpt.restore(fresh, self.meta)
        self.start = int(jax.device_get(self.state.step))
        # 0 when fresh or written before the count existed.
        self.train_seconds = 0.0
        if restored is not None:
            self.train_seconds = float(self.ckpt.saved_meta(restored).get("train_seconds", 0.0))
            logging.info("resuming from step %d of %d", self.start, self.steps)
        elif config.train.get("init_from", ""):
            start = initial_variables(config.train.init_from, config.model.name, fresh.variables)
            self.state = self.state.replace(**parallel.replicate(start, self.mesh))

    def close(self) -> None:
        """Waits for a checkpoint in flight (nothing half-written survives), then closes."""
        self.ckpt.wait()
        self.ckpt.close()
        self.writer.close()

    def summary(self, config, progress: _Progress, timer, t_start: float) -> dict[str, Any]:
        """What summary.json holds; times in seconds (the first step includes compilation)."""
        t_end, t_first = time.perf_counter(), progress.t_first
        return {
            "model": config.model.name,
            "parameters": checkpoint.parameter_count(self.meta),
            "steps": self.steps,
            "resumed_from": self.start,
            "max_minutes": float(config.train.max_minutes),
            "devices": self.mesh.devices.size,
            "device": f"{self.mesh.devices.size} x {self.mesh.devices.flat[0].device_kind}",
            "final_step": progress.last,
            "stopped_by_budget": progress.last < self.steps,
            "train_seconds": timer.spent(),
            "wall_clock_s": t_end - t_start,
            "compile_and_first_step_s": (t_first - t_start) if t_first else 0.0,
            "train_s_excluding_compile": (t_end - t_first) if t_first else 0.0,
            "final_eval": progress.results,
            "checkpoints": self.ckpt.directory,
            "metrics": self.writer.path,
        }


def _default_batches(config, start: int, mesh) -> Iterator:
    from nucjax.data import pipeline

    return pipeline.train_batches(
        config.data,
        batch_size=config.train.batch_size,
        seed=config.seed,
        start_step=start,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        mesh=mesh,
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
    bad = {k: v for k, v in scalars.items() if not math.isfinite(v)}
    if bad:
        ckpt.wait()
        raise FloatingPointError(
            f"non-finite training metrics by step {step}: {bad}. Training stopped; the last "
            f"good checkpoint is step {ckpt.latest_step()} in {ckpt.directory}. Try a lower "
            "--config.optim.learning_rate or --config.optim.grad_clip_norm."
        )
    writer.write(step, "train", scalars)
    bar.set_postfix({k: f"{scalars[k]:.4g}" for k in ("loss",) if k in scalars}, refresh=False)


def _train_steps(config, run: _Run, batches: Iterator, timer, stop, bar) -> _Progress:
    """Runs steps run.start + 1 .. run.steps, fewer when the budget (timer) runs out.

    stop: preemption.stop_signals()'s flag; raises Preempted after checkpointing the step in
    flight once it is set.
    """
    train_step = make_train_step(run.spec, run.tx, run.mesh, augment.photometric(config.data))
    state, progress = run.state, _Progress(last=run.start)
    # A resumed run whose budget is already spent trains nothing (it must not go past it).
    todo = range(run.start + 1, run.steps + 1) if not timer.exhausted() else range(0)
    timer.start()
    for step in todo:
        batch = parallel.shard_batch(next(batches), run.mesh)
        if step == run.start + 1:
            train_step = _compiled_everywhere(train_step, state, batch)
        state, sums = train_step(state, batch)
        progress.pending, progress.last = add_sums(progress.pending, sums), step
        if progress.t_first is None or timer.limit_s > 0:  # the first step includes compilation
            jax.block_until_ready(state.step)  # a budget counts finished steps
            progress.t_first = progress.t_first or time.perf_counter()
        if _after_step(config, run, step, state, progress, timer, stop, bar):
            break
    timer.stop()
    jax.block_until_ready(state)
    return progress


def _after_step(config, run: _Run, step: int, state, progress: _Progress, timer, stop, bar):
    """Logs, checkpoints, stops (Preempted) and evaluates as `step` calls for; True when it
    was the final step (the last one, or the budget is spent)."""
    # Read the flag and the budget once per step, so that logging, saving, evaluating and
    # stopping agree on them.
    final = step == run.steps or timer.exhausted()
    stopping = stop.signum is not None and not final
    saving = run.ckpt.due(step) or final or stopping
    if step % config.train.log_every_steps == 0 or saving:
        _log_train(step, progress.pending, run.ckpt, run.writer, bar)
        progress.pending = None
    bar.update(step - bar.n)
    if saving:
        run.ckpt.save(step, state, {**run.meta, "train_seconds": timer.spent()})
    if stopping:  # no evaluation: a scheduler's grace period is short
        run.ckpt.wait()
        raise preemption.Preempted(step, stop.signum, run.ckpt.directory)
    if step % run.eval_every == 0 or final:
        with timer.paused():
            variables = parallel.on_first_device(state.variables)
            progress.results = evaluators.run_for_training(
                config, run.spec, variables, step, run.writer
            )
    return final


def train_and_evaluate(
    config, workdir: str, batches: Iterator | None = None, clock=None
) -> dict[str, Any]:
    """Train `config` in `workdir`, resuming from its latest checkpoint. Returns the summary.

    batches: an iterator of host batches (see nucjax.models.spec) to train on instead of the
    input path of config.data.pipeline; it must start at the state's step (both paths do).
    clock: seconds for the training-time budget (config.train.max_minutes, nucjax.budget);
    default time.monotonic, tests pass a fake one.
    Raises Preempted after SIGTERM or SIGINT, with a checkpoint at the step it names
    (nucjax.preemption); running again resumes there.
    """
    # One run per workdir (process 0 holds the lock; the other hosts' processes share it).
    primary = jax.process_index() == 0
    with workdirs.training_lock(workdir) if primary else contextlib.nullcontext():
        run = _Run(config, workdir)
        batches = batches if batches is not None else _default_batches(config, run.start, run.mesh)
        timer = budget.TrainingClock(run.train_seconds, 60.0 * config.train.max_minutes, clock)
        bar = reporting.progress(run.steps, "train", "step", initial=run.start)
        t_start = time.perf_counter()
        with preemption.stop_signals() as stop:
            try:
                progress = _train_steps(config, run, batches, timer, stop, bar)
            finally:
                bar.close()
                run.close()  # on any exit: nothing half-written survives
        summary = run.summary(config, progress, timer, t_start)
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
    "train_and_evaluate",
]
