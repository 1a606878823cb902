"""The device mesh and the placement of host batches on it.

nucjax trains data-parallel over a 1-D mesh with one axis, `data`: every device holds the
whole model and a slice of the batch. The same code runs on 1 CPU, several fake CPU devices,
several GPUs or a TPU slice, and across hosts (each host feeds its own slice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


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


def replicate(tree, mesh: Mesh):
    """Place a pytree of arrays on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
