"""A thin wrapper over orbax's CheckpointManager: the train state plus what made it.

Each checkpoint holds two items: `state` (the TrainState pytree) and `meta` (JSON: the model
name and the shape of every parameter), so that restoring a checkpoint written for another
model or configuration gives a clear error instead of a shape traceback.

Two ways back: Checkpointer.restore gives the whole TrainState (the trainer resuming), and
restore_variables gives only {"params", "batch_stats"} (evaluate, predict): it needs no model,
no optimizer and no TrainState, reading the tree's structure from the checkpoint itself.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class IncompatibleCheckpointError(ValueError):
    """The checkpoint in a workdir was written for another model or configuration."""


def param_shapes(params) -> dict[str, list[int]]:
    """{'/'-joined parameter path: shape} for every leaf of `params`."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): list(leaf.shape) for path, leaf in flat
    }


def describe(model_name: str, params) -> dict[str, Any]:
    return {"model": model_name, "param_shapes": param_shapes(params)}


def check_compatible(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Raise IncompatibleCheckpointError naming what differs between two `describe` results."""
    if saved.get("model") != current["model"]:
        raise IncompatibleCheckpointError(
            f"{where} holds a {saved.get('model')!r} model but the config builds "
            f"{current['model']!r}; use another --workdir or the matching --config."
        )
    old, new = saved.get("param_shapes", {}), current["param_shapes"]
    problems = [f"{k}: missing from the model" for k in sorted(set(old) - set(new))]
    problems += [f"{k}: missing from the checkpoint" for k in sorted(set(new) - set(old))]
    problems += [
        f"{k}: checkpoint {old[k]} vs model {new[k]}"
        for k in sorted(set(old) & set(new))
        if list(old[k]) != list(new[k])
    ]
    if problems:
        shown = "\n  ".join(problems[:10]) + ("\n  ..." if len(problems) > 10 else "")
        raise IncompatibleCheckpointError(
            f"{where} was written for a differently shaped {current['model']!r} model "
            f"({len(problems)} parameters differ):\n  {shown}\n"
            "Use another --workdir, or the config that wrote it."
        )


class Checkpointer:
    """Saves every `every_steps` steps, keeps the last `keep`, restores the latest."""

    def __init__(self, directory: str, *, every_steps: int, keep: int):
        self.directory = os.path.abspath(directory)
        self.every_steps = every_steps
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def due(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def save(self, step: int, state, meta: dict[str, Any]) -> None:
        """Save asynchronously; orbax writes to a temporary folder and renames when complete."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def restore(self, state_template, meta: dict[str, Any], step: int | None = None):
        """Restore `step` (default latest) shaped and sharded like `state_template`.

        Returns (state, step), or (state_template, None) when there is no checkpoint.
        """
        step = self.manager.latest_step() if step is None else step
        if step is None:
            return state_template, None
        where = os.path.join(self.directory, str(step))
        check_compatible(self.saved_meta(step), meta, where)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        ).state
        logging.info("restored %s", where)
        return restored, step

    def saved_meta(self, step: int) -> dict[str, Any]:
        """The `meta` item saved with checkpoint `step` (describe() plus what the trainer adds,
        such as `train_seconds`)."""
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


class CheckpointNotFoundError(FileNotFoundError):
    """The folder holds no finished checkpoint (or not the requested step)."""


def saved_steps(directory: str) -> list[int]:
    """The steps saved under `directory` (finished checkpoints only: digit-named folders)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def restore_variables(
    directory: str, step: int | None = None, device: jax.Device | None = None
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """({"params", "batch_stats"} on `device` (default the first), meta, step) of a checkpoint.

    step: default the latest. Only those two subtrees are read (orbax partial restore); the
    optimizer state stays on disk. Raises CheckpointNotFoundError naming what is there.
    """
    steps = saved_steps(directory)
    if not steps:
        raise CheckpointNotFoundError(f"no checkpoint in {directory}")
    if step is not None and step not in steps:
        raise CheckpointNotFoundError(f"no checkpoint of step {step} in {directory}; has {steps}")
    step = steps[-1] if step is None else step
    sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
    manager = ocp.CheckpointManager(
        directory,
        item_handlers={"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
    )
    try:
        tree = manager.item_metadata(step)["state"]
        tree = getattr(tree, "tree", tree)
        wanted = {k: tree[k] for k in ("params", "batch_stats")}
        item = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), wanted
        )
        how = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=sharding), item)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item=item, restore_args=how, partial_restore=True),
                meta=ocp.args.JsonRestore(),
            ),
        )
    finally:
        manager.close()
    logging.info("restored parameters of %s", os.path.join(directory, str(step)))
    return dict(restored.state), restored.meta, step
