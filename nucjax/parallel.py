"""The device mesh and the placement of host batches on it.

nucjax trains data-parallel over a 1-D mesh with one axis, `data`: every device holds the
whole model and a slice of the batch. The same code runs on 1 CPU, several fake CPU devices,
several GPUs or a TPU slice, and across hosts: `initialize_distributed` starts JAX's
multi-controller runtime, every process then runs the same program on its own devices and
feeds its own rows of each global batch (`shard_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"
T = TypeVar("T")


class DistributedSetupError(ValueError):
    """The multi-process flags or environment do not describe a run JAX can start."""


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
    """Start JAX's multi-process runtime (jax.distributed.initialize); True if started.

    Call before anything touches a device. Without `auto`, the three arguments go together:
    all given (one process each, process 0 hosts the coordinator at coordinator_address
    HOST:PORT) or none (one process, nothing started). With `auto`, jax detects what is not
    given from the cluster it runs in (SLURM, Open MPI, a Cloud TPU pod slice, Kubernetes).
    On CPU the processes' collectives go through gloo (jax_cpu_collectives_implementation,
    the default of jax 0.10.2: nothing to set).
    """
    given = {
        "--coordinator_address": coordinator_address,
        "--num_processes": num_processes,
        "--process_id": process_id,
    }
    missing = [name for name, value in given.items() if value is None]
    if not auto and len(missing) == len(given):
        return False
    if not auto and missing:
        raise DistributedSetupError(
            f"{', '.join(missing)} missing: a multi-process run needs --coordinator_address, "
            "--num_processes and --process_id together (or --distributed to detect them)"
        )
    host, _, port = (coordinator_address or "auto:0").rpartition(":")
    if not host or not port.isdigit():
        raise DistributedSetupError(
            f"--coordinator_address={coordinator_address!r} is not HOST:PORT"
        )
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except ValueError as e:  # what jax could not detect or accept, in its words
        hint = (
            " (--distributed detects SLURM, Open MPI and Cloud TPU pod slices; elsewhere give "
            "--coordinator_address, --num_processes and --process_id)"
        )
        raise DistributedSetupError(
            f"cannot start a multi-process run: {e}{hint if auto else ''}"
        ) from e
    return True


def sync_processes(name: str, timeout_s: int = 3600) -> None:
    """Wait until every process has reached the barrier `name` (unique per run); nothing on
    one process. A barrier of the distributed runtime's coordination service (orbax's), not a
    device collective: gloo (CPU) lets processes only 30 s to meet at a collective."""
    if jax.process_count() > 1:
        everyone = set(range(jax.process_count()))
        ocp.multihost.sync_global_processes(name, timeout=timeout_s, processes=everyone)


def process_0_first(name: str, fn: Callable[[], T]) -> T:
    """fn() on process 0, then, once it returned, on every other process; fn() where there is
    one process. For first-time work in a folder the processes share (fetching and building
    the data set): done once, then found done, instead of N processes building at once."""
    if jax.process_count() == 1:
        return fn()
    result = fn() if jax.process_index() == 0 else None
    sync_processes(name)
    return result if jax.process_index() == 0 else fn()


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named `data` over `devices` (default: every device of every host)."""
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh(
        (len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "config.train.batch_size") -> None:
    """A clear error when a global batch cannot be split evenly across the devices."""
    n = mesh.devices.size
    if batch_size % n or batch_size % jax.process_count():
        raise ValueError(
            f"{what}={batch_size} is not divisible by the {n} devices of the mesh "
            f"({jax.process_count()} processes); use a multiple of {n}."
        )


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's slice of a global batch -> global arrays sharded along `data`.

    batch: dict of (b, ...) arrays, b = global batch / process count; or global jax.Arrays
    already sharded so (the device input path's batches), which pass through untouched.
    """
    sharding = batch_sharded(mesh)
    return {k: _global_array(v, sharding) for k, v in batch.items()}


def _global_array(value, sharding: NamedSharding) -> jax.Array:
    if isinstance(value, jax.Array) and value.sharding.is_equivalent_to(sharding, value.ndim):
        return value
    return jax.make_array_from_process_local_data(sharding, np.asarray(value))


def on_first_device(tree):
    """A replicated pytree as arrays on this process's first device (what evaluators and
    whole-image prediction take), without a copy through the host."""
    return jax.tree.map(lambda x: x.addressable_shards[0].data, tree)


def replicate(tree, mesh: Mesh):
    """Place a pytree of arrays on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
