"""The device-resident input path (config.data.pipeline=device): no TensorFlow; per step the
host only draws a few numbers per example.

Each process decodes its shard of the training split once (pipeline.decode_shard) and puts it
in accelerator memory, replicated on its devices: pixels and labels packed flat with
per-image offsets and sizes (flat rather than padded to the largest image: DSB mixes 256x256
and 1040x1388 images, and padding every training image to the largest would take ~10x the
memory). A batch is then one jitted program of (store, image indices, uniforms): every device
renders its own slice of the global batch (shard_map over the `data` axis), so batches arrive
sharded, and the result is the same on 1 or N devices.

Batch k of process p is a pure function of (seed, p, k), so resuming at step k costs nothing.
The random choices are drawn on the host by numpy's PCG64 (step_draws, image_indices; see
step_draws for why not in JAX), the same on every backend:
  image    element e = k * b + j (b the per-process batch) shows image
           permutation(seed, p, epoch)[e mod N], epoch = e // N; or, when
           data.modality_balance > 0, a draw by sampling_weights
  window   side c = max(round(S / z), 1), z ~ U(1 - scale_jitter, 1 + scale_jitter) (c = S
           without jitter), top-left corner uniform over the positions that keep the window
           inside the image, or the image inside the window when the image is smaller
  jitter   x * U(1 - j, 1 + j) + U(-j, j) on the normalised pixels, j = intensity_jitter
  flips    left-right, then up-down, each with probability 1/2 (data.flips)
  rot90    k ~ U{0..3} counter-clockwise quarter turns (data.rot90)
These are pipeline_tfdata's augmentations, with its field meanings: the window is resized to
S x S bilinear for the image and nearest for the label with TensorFlow's half-pixel
conventions; pixels outside the image are 0 in the image (after normalisation and jitter) and
-1 in the label. Geometry is done as one gather: every output pixel maps back through the
rotation, the flips and the zoom to coordinates in the image.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from nucjax import parallel
from nucjax.data.pipeline import decode_shard, local_batch_size

NUM_DRAWS = 8  # uniforms per example: zoom, top, left, gain, offset, flip_lr, flip_ud, turns
_STORE_KEYS = ("pixels", "labels", "offset", "height", "width", "mean", "scale", "log_weight")


def device_store(store: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """decode_shard's arrays in the dtypes the device keeps (indices int32: JAX's default)."""
    if store["pixels"].shape[0] >= np.iinfo(np.int32).max:
        raise ValueError(
            f"the device input path holds at most 2**31 pixels per process, this shard has "
            f"{store['pixels'].shape[0]}: use more processes or config.data.pipeline=tfdata"
        )
    ints = ("offset", "height", "width")
    return {k: store[k].astype(np.int32) if k in ints else store[k] for k in _STORE_KEYS}


def _generator(stream: int, *words: int) -> np.random.Generator:
    """numpy PCG64 for one purpose (stream 0 augmentations, 1 weighted draws, 2 epoch
    orders), seeded by (stream, *words); the stream goes first so that streams never share
    a seed (SeedSequence pads its entropy with zeros)."""
    return np.random.Generator(np.random.PCG64([stream, *words]))


def step_draws(seed: int, process_index: int, step: int, local_batch: int) -> np.ndarray:
    """(local_batch, NUM_DRAWS) float32 uniforms in [0, 1) for one step of one process.

    Drawn on the host by numpy (PCG64 seeded by (seed, process, step)): a few numbers per
    example, a pure function of (seed, process, step). In the jitted program, JAX's threefry
    generator is inlined per call and XLA:CPU took 30 s to compile just the draws of one
    example (2 fold_ins, 2 bit draws; load 27 on 2 cores), minutes with one call per draw.
    """
    return _generator(0, seed, process_index, step).random((local_batch, NUM_DRAWS), np.float32)


def image_indices(
    seed: int, process_index: int, step: int, local_batch: int, log_weight: np.ndarray, balance
) -> np.ndarray:
    """(local_batch,) int32 store indices shown at `step`: element e = step * b + j shows
    permutation(seed, process, epoch)[e mod N], epoch = e // N (each epoch shows every image
    once); with data.modality_balance > 0, draws by exp(log_weight) instead."""
    num_images = len(log_weight)
    if balance > 0:
        weights = np.exp(log_weight.astype(np.float64))
        rng = _generator(1, seed, process_index, step)
        return rng.choice(num_images, size=local_batch, p=weights / weights.sum()).astype(np.int32)
    elements = step * local_batch + np.arange(local_batch, dtype=np.int64)
    epochs, positions = np.divmod(elements, num_images)
    orders = {
        int(epoch): _generator(2, seed, process_index, int(epoch)).permutation(num_images)
        for epoch in np.unique(epochs)
    }
    return np.array([orders[int(e)][p] for e, p in zip(epochs, positions, strict=True)], np.int32)


def augmentation_draws(u: jax.Array, augmentation, height, width) -> dict[str, jax.Array]:
    """The random choices for one example of an image of (height, width) (module docstring).

    u: (NUM_DRAWS,) uniforms in [0, 1) (step_draws). Returns scalars: window (int32 side c),
    top, left (int32 corner, negative when the image is smaller than the window), gain, offset
    (float32 intensity jitter), flip_lr, flip_ud (bool), turns (int32 0..3).
    """
    size = int(augmentation.crop_size)
    zoom, jitter = float(augmentation.scale_jitter), float(augmentation.intensity_jitter)
    window = jnp.int32(size)
    if zoom > 0:
        factor = 1.0 - zoom + 2.0 * zoom * u[0]
        window = jnp.maximum(jnp.round(size / factor).astype(jnp.int32), 1)
    corner = []
    for extent, draw in ((height, u[1]), (width, u[2])):
        low, high = jnp.minimum(extent - window, 0), jnp.maximum(extent - window, 0)
        offset = jnp.floor(draw * (high - low + 1).astype(jnp.float32)).astype(jnp.int32)
        corner.append(jnp.minimum(low + offset, high))
    flips, turns = bool(augmentation.flips), int(bool(augmentation.rot90))
    return {
        "window": window,
        "top": corner[0],
        "left": corner[1],
        "gain": 1.0 - jitter + 2.0 * jitter * u[3],
        "offset": -jitter + 2.0 * jitter * u[4],
        "flip_lr": (u[5] < 0.5) & flips,
        "flip_ud": (u[6] < 0.5) & flips,
        "turns": jnp.minimum(jnp.floor(4 * u[7]).astype(jnp.int32), 3) * turns,
    }


def unrotate(size: int, turns, flip_lr, flip_ud) -> tuple[jax.Array, jax.Array]:
    """Output pixel (i, j) of rot90(flip_ud(flip_lr(A)), turns) -> the (row, col) of A it shows.

    Returns two (S, S) int32 arrays, S = size; matches np.rot90 (counter-clockwise) and
    np.flip on a square A.
    """
    i, j = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
    last = size - 1
    rows = jnp.stack([i, j, last - i, last - j])[turns]
    cols = jnp.stack([j, last - i, last - j, i])[turns]
    rows = jnp.where(flip_ud, last - rows, rows)
    cols = jnp.where(flip_lr, last - cols, cols)
    return rows, cols


def _resize_taps(index: jax.Array, window, size: int):
    """Rows (or cols) of an S-pixel resize of a `window`-pixel line: bilinear taps (low, high,
    weight of high) and the nearest index, TensorFlow's half-pixel conventions, window-relative."""
    scale = window.astype(jnp.float32) / size
    centre = jnp.clip((index.astype(jnp.float32) + 0.5) * scale - 0.5, 0.0, window - 1.0)
    low = jnp.floor(centre).astype(jnp.int32)
    high = jnp.minimum(low + 1, window - 1)
    nearest = jnp.minimum(jnp.floor((index.astype(jnp.float32) + 0.5) * scale), window - 1)
    return low, high, centre - low, nearest.astype(jnp.int32)


def render(store, i, draws, size: int, zoom: bool) -> tuple[jax.Array, jax.Array]:
    """Image i of the store under `draws` (augmentation_draws) -> image (S, S, 3) float32,
    label (S, S) int32. zoom: whether the window is resized (data.scale_jitter > 0); without
    it the window is S x S and is read pixel for pixel."""
    h, w, start = store["height"][i], store["width"][i], store["offset"][i]
    mean, scale = store["mean"][i], store["scale"][i]
    rows, cols = unrotate(size, draws["turns"], draws["flip_lr"], draws["flip_ud"])

    def read(r, c):
        """Normalised, jittered pixels (and labels) at window coordinates; 0 / -1 outside."""
        y, x = draws["top"] + r, draws["left"] + c
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        flat = start + jnp.clip(y, 0, h - 1) * w + jnp.clip(x, 0, w - 1)
        value = (store["pixels"][flat].astype(jnp.float32) - mean) / scale
        value = value * draws["gain"] + draws["offset"]
        label = store["labels"][flat].astype(jnp.int32)
        return jnp.where(inside[..., None], value, 0.0), jnp.where(inside, label, -1)

    if not zoom:
        return read(rows, cols)
    r0, r1, wr, rn = _resize_taps(rows, draws["window"], size)
    c0, c1, wc, cn = _resize_taps(cols, draws["window"], size)
    top = read(r0, c0)[0] * (1 - wc[..., None]) + read(r0, c1)[0] * wc[..., None]
    bottom = read(r1, c0)[0] * (1 - wc[..., None]) + read(r1, c1)[0] * wc[..., None]
    image = top * (1 - wr[..., None]) + bottom * wr[..., None]
    return image, read(rn, cn)[1]


def example(store, augmentation, i, u) -> dict[str, jax.Array]:
    """Image i of the store under the uniforms u (NUM_DRAWS,) -> one augmented example."""
    draws = augmentation_draws(u, augmentation, store["height"][i], store["width"][i])
    zoom = float(augmentation.scale_jitter) > 0
    image, label = render(store, i, draws, int(augmentation.crop_size), zoom)
    return {"image": image, "label": label, "valid": jnp.float32(1.0)}


class Augmentation(NamedTuple):
    """The config.data fields a batch program depends on (hashable: one compile per value)."""

    crop_size: int
    scale_jitter: float
    intensity_jitter: float
    flips: bool
    rot90: bool

    @classmethod
    def from_config(cls, data_config) -> Augmentation:
        d = data_config
        jitter = (float(d.scale_jitter), float(d.intensity_jitter))
        return cls(int(d.crop_size), *jitter, bool(d.flips), bool(d.rot90))


def make_batcher(data_config, mesh):
    """(store on the mesh's devices, indices (b,), uniforms (b, NUM_DRAWS)) -> the batch of
    those examples, sharded over `mesh` (the process's own devices) like indices and uniforms:
    each device renders its own slice. Compiled once per (augmentation fields, mesh)."""
    return _batcher(Augmentation.from_config(data_config), mesh)


@functools.cache
def _batcher(augmentation: Augmentation, mesh):
    def per_device_batch(store, indices, uniforms):
        render_one = functools.partial(example, store, augmentation)
        return jax.vmap(render_one)(indices, uniforms)

    axis = P(parallel.AXIS)
    sharded = jax.shard_map(per_device_batch, mesh=mesh, in_specs=(P(), axis, axis), out_specs=axis)
    return jax.jit(sharded)


def _global(local: dict[str, jax.Array], mesh) -> dict[str, jax.Array]:
    """This process's batch (sharded over its devices) -> the global batch over `mesh`, rows
    of process p after those of process p - 1 (parallel.shard_batch's layout), no copy."""
    sharding = parallel.batch_sharded(mesh)
    processes = jax.process_count()
    return {
        k: jax.make_array_from_single_device_arrays(
            (v.shape[0] * processes, *v.shape[1:]),
            sharding,
            [s.data for s in sorted(v.addressable_shards, key=lambda s: s.index[0].start or 0)],
        )
        for k, v in local.items()
    }


def train_batches(
    data_config,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    mesh=None,
):
    """pipeline.train_batches on the device path: global batches as jax.Arrays sharded along
    `data` over `mesh` (default: every device)."""
    mesh = mesh if mesh is not None else parallel.make_mesh()
    local = local_batch_size(batch_size, process_count)
    own = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    local_mesh = parallel.make_mesh(own)
    parallel.check_batch_size(local, local_mesh, "the per-process batch")
    store = device_store(decode_shard(data_config, "train", process_index, process_count))
    store = jax.device_put(store, NamedSharding(local_mesh, P()))
    log_weight = np.asarray(jax.device_get(store["log_weight"]))
    batcher, rows = make_batcher(data_config, local_mesh), parallel.batch_sharded(local_mesh)
    seed, process_index, step = int(seed), int(process_index), int(start_step)
    while True:
        indices = image_indices(
            seed, process_index, step, local, log_weight, data_config.modality_balance
        )
        uniforms = step_draws(seed, process_index, step, local)
        batch = batcher(store, *jax.device_put((indices, uniforms), rows))
        yield batch if process_count == 1 else _global(batch, mesh)
        step += 1


__all__ = [
    "augmentation_draws",
    "image_indices",
    "render",
    "step_draws",
    "train_batches",
    "unrotate",
]
