"""A thin wrapper over orbax's CheckpointManager: the train state plus what made it.

Each checkpoint holds two items: `state` (the TrainState pytree) and `meta` (JSON: the model
name and the shape of every parameter), so that restoring a checkpoint written for another
model or configuration gives a clear error instead of a shape traceback.

Two ways back: Checkpointer.restore gives the whole TrainState (the trainer resuming), and
restore_variables gives only {"params", "batch_stats"} (evaluate, predict): it needs no model,
no optimizer and no TrainState, reading the tree's structure from the checkpoint itself.

Integrity: orbax checks its index files but not array bytes stored raw, so a flipped byte
there would load silently. `meta` also holds a CRC32 of every array's bytes (array_checksums),
checked on restore. A checkpoint that
cannot be read or does not match is a DamagedCheckpointError naming its step folder; the
trainer then resumes from the newest intact older one (the damaged folder is set aside as
STEP.damaged), while restore_variables raises it. Temporary folders of saves a kill
interrupted are removed when a Checkpointer opens the folder.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import zlib
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

CHECKSUMS = "checksums"  # the key of meta that holds {array path: crc32}
# orbax saves into STEP + this suffix + a timestamp and renames the folder when complete.
TMP_MARKER = ".orbax-checkpoint-tmp"


class IncompatibleCheckpointError(ValueError):
    """The checkpoint in a workdir was written for another model or configuration."""


class DamagedCheckpointError(ValueError):
    """A checkpoint's files cannot be read, or its arrays do not match their checksums."""


def leaf_name(path: Iterable) -> str:
    """A jax key path (dict keys, attribute names, sequence indices) -> 'params/conv/kernel'."""
    return "/".join(
        str(next((getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a)), k)) for k in path
    )


def param_shapes(params) -> dict[str, list[int]]:
    """{'/'-joined parameter path: shape} for every leaf of `params`."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {leaf_name(path): list(leaf.shape) for path, leaf in flat}


def parameter_count(meta: dict[str, Any]) -> int:
    """The number of trainable parameters a describe() result (or a saved meta) records."""
    return sum(math.prod(shape) for shape in meta.get("param_shapes", {}).values())


def array_checksums(tree) -> dict[str, int]:
    """{'/'-joined leaf path: CRC32 of the leaf's bytes} for every array of `tree`.

    Leaves may be numpy arrays or (fully addressable) jax arrays, which are copied to the host.
    """
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {
        leaf_name(path): zlib.crc32(np.ascontiguousarray(leaf).tobytes()) for path, leaf in flat
    }


def checksum_mismatches(expected: dict[str, int], tree) -> list[str]:
    """The leaf paths of `tree` whose bytes do not match `expected` (or that it lacks)."""
    found = array_checksums(tree)
    return sorted(name for name, crc in found.items() if expected.get(name) != crc)


def _failure(e: Exception) -> str:
    """One line for an exception from orbax, tensorstore or json (their messages run long)."""
    line = (str(e).strip().splitlines() or [""])[0]
    line = line.split(" See full TensorStore details")[0]  # then a pybind11 repr, no detail
    return f"{type(e).__name__}: {line[:200]}{'...' if len(line) > 200 else ''}"


def _read_meta(manager: ocp.CheckpointManager, step: int, where: str) -> dict[str, Any]:
    """The `meta` item of `step`; DamagedCheckpointError if it cannot be read or is no
    nucjax description (a missing `meta` folder, an overwritten or truncated file)."""
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as e:  # orbax, tensorstore and json raise many types for damaged files
        raise DamagedCheckpointError(
            f"checkpoint {where} is damaged: cannot read its meta item ({_failure(e)})"
        ) from e
    if not isinstance(meta, dict) or "model" not in meta or "param_shapes" not in meta:
        raise DamagedCheckpointError(
            f"checkpoint {where} is damaged: its meta item is not a nucjax description"
        )
    return meta


def _verify(meta: dict[str, Any], tree, where: str) -> None:
    """DamagedCheckpointError naming the first array of `tree` that does not match its CRC32."""
    if CHECKSUMS not in meta:  # written before nucjax stored checksums: nothing to check
        logging.warning("checkpoint %s has no checksums (an older nucjax): not verified", where)
        return
    if bad := checksum_mismatches(meta[CHECKSUMS], tree):
        raise DamagedCheckpointError(
            f"checkpoint {where} is damaged: array {bad[0]} does not match the checksum "
            f"written with it ({len(bad)} arrays differ)"
        )


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete the temporary folders of saves that never finished (the process was killed
    while orbax wrote them) under `directory`; log and return their paths."""
    stale = sorted(glob.glob(os.path.join(glob.escape(directory), f"*{TMP_MARKER}*")))
    for path in stale:
        logging.warning("removing %s: the temporary folder of a save that never finished", path)
        shutil.rmtree(path, ignore_errors=True)
    return stale


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
    """Saves every `every_steps` steps, keeps the last `keep`, restores the newest intact one."""

    def __init__(self, directory: str, *, every_steps: int, keep: int):
        self.directory = os.path.abspath(directory)
        self.every_steps = every_steps
        if jax.process_index() == 0:
            remove_stale_temporaries(self.directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def due(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def save(self, step: int, state, meta: dict[str, Any]) -> None:
        """Save asynchronously; orbax writes to a temporary folder and renames when complete.

        meta: describe(...); the CRC32 of every array of `state` is added to it (this copies
        the state to the host once, before the call returns).
        """
        meta = {**meta, CHECKSUMS: array_checksums(state)}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def restore(self, state_template, meta: dict[str, Any], step: int | None = None):
        """Restore `step`, or by default the newest intact checkpoint, shaped and sharded like
        `state_template`.

        Returns (state, step), or (state_template, None) when there is no checkpoint. Damaged
        checkpoints newer than the one restored are logged as warnings and set aside as
        STEP.damaged; DamagedCheckpointError when `step` (or every checkpoint) is damaged, and
        IncompatibleCheckpointError for one written by another model or configuration.
        """
        steps = sorted(self.manager.all_steps(), reverse=True) if step is None else [step]
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        damaged = []
        for candidate in steps:
            try:
                restored = self._restore_step(candidate, abstract, meta)
            except DamagedCheckpointError as e:
                if step is not None:
                    raise
                logging.warning("%s; trying the previous checkpoint", e)
                damaged.append(candidate)
                continue
            self._set_aside(damaged)
            return restored, candidate
        if damaged:
            raise DamagedCheckpointError(
                f"no intact checkpoint in {self.directory}: steps {sorted(damaged)} are "
                "damaged (see the warnings above); move the folder away to train from scratch"
            )
        return state_template, None

    def _restore_step(self, step: int, abstract, meta: dict[str, Any]):
        where = os.path.join(self.directory, str(step))
        saved_meta = _read_meta(self.manager, step, where)
        check_compatible(saved_meta, meta, where)
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            ).state
        except Exception as e:  # orbax and tensorstore raise many types for damaged files
            raise DamagedCheckpointError(
                f"checkpoint {where} is damaged: cannot read its arrays ({_failure(e)})"
            ) from e
        _verify(saved_meta, restored, where)
        logging.info("restored %s", where)
        return restored

    def _set_aside(self, steps: list[int]) -> None:
        """Rename damaged step folders to STEP.damaged: kept for inspection, no longer steps
        (training saves that step again), and not counted or deleted by keep-last-N."""
        if not steps:
            return
        if jax.process_index() == 0:  # no barrier yet: multi-host runs are not handled here
            for step in steps:
                where = os.path.join(self.directory, str(step))
                shutil.rmtree(f"{where}.damaged", ignore_errors=True)
                os.replace(where, f"{where}.damaged")
                logging.warning("moved the damaged checkpoint %s to %s.damaged", where, where)
        self.manager.reload()

    def saved_meta(self, step: int) -> dict[str, Any]:
        """The `meta` item saved with checkpoint `step` (describe() plus what the trainer adds,
        such as `train_seconds`)."""
        return _read_meta(self.manager, step, os.path.join(self.directory, str(step)))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def read_meta(directory: str, step: int) -> dict[str, Any]:
    """The `meta` item of checkpoint `step` under `directory`, read without opening a
    Checkpointer (which would tidy the folder): for reports on finished runs."""
    with ocp.CheckpointManager(os.path.abspath(directory)) as manager:
        return _read_meta(manager, step, os.path.join(directory, str(step)))


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

    step: default the latest. Only those two subtrees are read (orbax partial restore) and
    checked against their checksums; the optimizer state stays on disk. Raises
    CheckpointNotFoundError naming what is there, DamagedCheckpointError naming the step
    folder (never an older step instead: evaluation must say which weights it scored).
    """
    steps = saved_steps(directory)
    if not steps:
        raise CheckpointNotFoundError(f"no checkpoint in {directory}")
    if step is not None and step not in steps:
        raise CheckpointNotFoundError(f"no checkpoint of step {step} in {directory}; has {steps}")
    step = steps[-1] if step is None else step
    where = os.path.join(directory, str(step))
    sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
    manager = ocp.CheckpointManager(
        directory,
        item_handlers={"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
    )
    try:
        meta = _read_meta(manager, step, where)
        variables = _read_variables(manager, step, sharding, where)
        _verify(meta, variables, where)
    except DamagedCheckpointError as e:
        raise DamagedCheckpointError(f"{e}; {directory} has steps {steps}") from e
    finally:
        manager.close()
    logging.info("restored parameters of %s", where)
    return variables, meta, step


def _read_variables(manager: ocp.CheckpointManager, step: int, sharding, where: str) -> dict:
    """{"params", "batch_stats"} of `step`, structure from its own metadata, on `sharding`."""
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
                state=ocp.args.PyTreeRestore(item=item, restore_args=how, partial_restore=True)
            ),
        )
    except Exception as e:  # orbax and tensorstore raise many types for damaged files
        raise DamagedCheckpointError(
            f"checkpoint {where} is damaged: cannot read its arrays ({_failure(e)})"
        ) from e
    return dict(restored.state)
