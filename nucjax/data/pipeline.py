"""Host input pipeline: normalised, augmented training crops and whole-image evaluation tiles.

Batches follow the host batch contract of nucjax.models.spec: image (B, S, S, 3) float32
normalised per image, label (B, S, S) int32 with -1 = not labelled, valid (B,) float32.

Training (train_batches) is built for exact, cheap resume. Each process decodes its shard of
the training split once into memory (uint8 pixels, labels, and each whole image's normalisation
statistics). The stream of examples is then a pure function of the element index e:
  epoch, position = divmod(e, n_images)
  image = permutation(seed, epoch)[position]
  crop, flips, rotation, zoom, jitter = stateless random draws from (seed, e)
so batch k (elements k*b .. k*b+b-1) is the same whether iteration started at 0 or at step k,
and starting at step k costs nothing: the stream simply begins at element k*b.

Normalisation is per image, (x - mean) / max(std, 1), mean and std over all pixels and
channels of the whole image. DSB 2018 mixes dim fluorescence, bright brightfield and stained
histology; standardising each image puts them on one scale, and mean/std (unlike percentiles)
is cheap and exactly the same in numpy (predict, no TensorFlow) and TensorFlow (training). The
floor of one grey level keeps flat images from turning quantisation noise into signal. Because
it is affine per image, applying the whole image's statistics to a crop equals normalising the
whole image and then cropping; padding is 0 after normalisation.

TensorFlow is imported only when a tf.data function runs: normalize_image works without it.
To bring a stored image to (H, W, 3) uint8 first, use nucjax.data.images.to_rgb.
"""

from __future__ import annotations

import functools

import numpy as np

from nucjax.data import raw_dataset
from nucjax.data.images import input_view

MIN_STD = 1.0  # grey levels; the normalisation's floor on the standard deviation


@functools.cache
def _tf():
    import tensorflow as tf

    try:  # Hide GPUs from TensorFlow, or it reserves memory that JAX needs.
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # devices already initialised
        pass
    return tf


# ----------------------------------------------------------------------------- images


def normalize_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 (or any real) -> (H, W, 3) float32: (x - mean) / max(std, MIN_STD)."""
    x = np.asarray(image, np.float64)
    return ((x - x.mean()) / max(x.std(), MIN_STD)).astype(np.float32)


def normalize_image_tf(image):
    """TensorFlow twin of normalize_image: (H, W, 3) -> (H, W, 3) float32."""
    tf = _tf()
    x = tf.cast(image, tf.float64)
    mean = tf.reduce_mean(x)
    std = tf.sqrt(tf.reduce_mean(tf.square(x - mean)))
    return tf.cast((x - mean) / tf.maximum(std, MIN_STD), tf.float32)


# ----------------------------------------------------------------------------- training


def _decode_shard(data_config, split, process_index, process_count) -> dict[str, np.ndarray]:
    """This process's images of a split, decoded once and packed flat for random access.

    pixels (P, 3) uint8 and labels (P,) int16 or int32 hold every image's pixels row-major one
    after another; offset, height, width, mean, scale are per image.
    """
    ds = raw_dataset(data_config, split).shard(process_count, process_index)
    pixels, labels, shapes, means, scales = [], [], [], [], []
    for example in ds.as_numpy_iterator():
        image = input_view(example["image"], data_config.input_view)
        label = example["label"]
        pixels.append(image.reshape(-1, 3))
        labels.append(label.ravel())
        shapes.append(label.shape)
        x = image.astype(np.float64)
        means.append(x.mean())
        scales.append(max(x.std(), MIN_STD))
    if not pixels:
        raise ValueError(f"split {split!r} has no images for process {process_index}")
    labels = np.concatenate(labels)
    small = labels.min() >= np.iinfo(np.int16).min and labels.max() <= np.iinfo(np.int16).max
    sizes = np.array([h * w for h, w in shapes], np.int64)
    return {
        "pixels": np.concatenate(pixels),
        "labels": labels.astype(np.int16) if small else labels,
        "offset": np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
        "height": np.array([h for h, _ in shapes], np.int64),
        "width": np.array([w for _, w in shapes], np.int64),
        "mean": np.array(means, np.float32),
        "scale": np.array(scales, np.float32),
    }


def _uniform(tf, key, low=0.0, high=1.0):
    return tf.random.stateless_uniform([], key, low, high)


def _train_example_fn(store, data_config, seed: int, process_index: int):
    """element index e (int64) -> one augmented example; see the module docstring."""
    tf = _tf()
    store = {k: tf.constant(v) for k, v in store.items()}
    num_images = int(store["height"].shape[0])
    size = int(data_config.crop_size)
    zoom, jitter = float(data_config.scale_jitter), float(data_config.intensity_jitter)
    base = tf.constant([seed, process_index], tf.int64)
    order_key = tf.random.experimental.stateless_fold_in(base, 0)
    augment_key = tf.random.experimental.stateless_fold_in(base, 1)

    def crop(i, key):
        h, w = store["height"][i], store["width"][i]
        c = tf.constant(size, tf.int64)
        if zoom > 0:
            factor = _uniform(tf, key[0], 1.0 - zoom, 1.0 + zoom)
            c = tf.maximum(tf.cast(tf.round(size / factor), tf.int64), 1)
        corner = []
        for extent, k in ((h, key[1]), (w, key[2])):
            low, high = tf.minimum(extent - c, 0), tf.maximum(extent - c, 0) + 1
            corner.append(tf.random.stateless_uniform([], k, low, high, dtype=tf.int64))
        rows, cols = corner[0] + tf.range(c), corner[1] + tf.range(c)
        inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
        rows, cols = tf.clip_by_value(rows, 0, h - 1), tf.clip_by_value(cols, 0, w - 1)
        flat = store["offset"][i] + rows[:, None] * w + cols[None, :]
        pixels = tf.cast(tf.gather(store["pixels"], flat), tf.float32)
        image = (pixels - store["mean"][i]) / store["scale"][i]
        if jitter > 0:
            image = image * _uniform(tf, key[3], 1 - jitter, 1 + jitter)
            image = image + _uniform(tf, key[4], -jitter, jitter)
        image = tf.where(inside[..., None], image, 0.0)
        label = tf.where(inside, tf.cast(tf.gather(store["labels"], flat), tf.int32), -1)
        if zoom > 0:
            image = tf.image.resize(image, [size, size], "bilinear")
            label = tf.image.resize(label[..., None], [size, size], "nearest")[..., 0]
        return image, label

    def example(element):
        epoch, position = element // num_images, element % num_images
        epoch_key = tf.random.experimental.stateless_fold_in(order_key, epoch)
        shuffle = tf.random.stateless_uniform([num_images], epoch_key)
        i = tf.argsort(shuffle, stable=True)[position]
        key = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(augment_key, element), 8
        )
        image, label = crop(i, key)
        label = label[..., None]
        if data_config.flips:
            for axis, k in ((1, key[5]), (0, key[6])):
                flip = _uniform(tf, k) < 0.5
                image = tf.cond(flip, lambda x=image, a=axis: tf.reverse(x, [a]), lambda x=image: x)
                label = tf.cond(flip, lambda x=label, a=axis: tf.reverse(x, [a]), lambda x=label: x)
        if data_config.rot90:
            turns = tf.random.stateless_uniform([], key[7], 0, 4, dtype=tf.int32)
            image, label = tf.image.rot90(image, turns), tf.image.rot90(label, turns)
        image = tf.ensure_shape(image, [size, size, 3])
        label = tf.ensure_shape(label[..., 0], [size, size])
        return {"image": image, "label": label, "valid": tf.constant(1.0, tf.float32)}

    return example


def _local_batch_size(batch_size: int, process_count: int) -> int:
    if batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} processes")
    return batch_size // process_count


def train_batches(
    data_config,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index=0,
    process_count=1,
):
    """Endless, shuffled, augmented training batches of this process, as numpy dicts.

    Yields {image (b, S, S, 3) float32, label (b, S, S) int32, valid (b,) float32 ones} with
    b = batch_size // process_count (the global batch split across processes) and
    S = data_config.crop_size. The first batch is global batch number `start_step`; batch k is
    identical whether iteration started at 0 or at k (see the module docstring), and starting at
    a large step costs no more than starting at 0. Crops: a random S x S window (zoomed by
    1 +- scale_jitter when set; labels resized nearest), images smaller than the window padded
    with image 0 and label -1; then flips, rot90 and intensity jitter as configured.
    """
    tf = _tf()
    local = _local_batch_size(batch_size, process_count)
    store = _decode_shard(data_config, "train", process_index, process_count)
    example = _train_example_fn(store, data_config, int(seed), int(process_index))
    del store
    ds = tf.data.Dataset.range(start_step * local, np.iinfo(np.int64).max)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local, drop_remainder=True)
    if data_config.prefetch > 0:
        ds = ds.prefetch(data_config.prefetch)
    return ds.as_numpy_iterator()


# ----------------------------------------------------------------------------- evaluation


def tile_image(image: np.ndarray, label: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a whole image into non-overlapping tile x tile pieces, row by row.

    image (H, W, C), label (H, W) -> (n, tile, tile, C) and (n, tile, tile), n =
    ceil(H / tile) * ceil(W / tile). Past the image's edge, image is 0 and label -1, so every
    pixel lands in exactly one tile.
    """
    h, w = label.shape
    nh, nw = -(-h // tile), -(-w // tile)
    pad = ((0, nh * tile - h), (0, nw * tile - w))
    image = np.pad(image, pad + ((0, 0),))
    label = np.pad(label, pad, constant_values=-1)
    image = image.reshape(nh, tile, nw, tile, -1).transpose(0, 2, 1, 3, 4)
    label = label.reshape(nh, tile, nw, tile).transpose(0, 2, 1, 3)
    return image.reshape(nh * nw, tile, tile, -1), label.reshape(nh * nw, tile, tile)


def _padding_batch(batch_size: int, tile: int) -> dict[str, np.ndarray]:
    return {
        "image": np.zeros((batch_size, tile, tile, 3), np.float32),
        "label": np.full((batch_size, tile, tile), -1, np.int32),
        "valid": np.zeros(batch_size, np.float32),
    }


def eval_batches(
    data_config,
    split: str,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    max_images: int = 0,
):
    """Every image of a split, whole, as fixed-shape batches of T x T tiles (numpy dicts).

    Yields {image (b, T, T, 3) float32, label (b, T, T) int32, valid (b,) float32},
    b = batch_size // process_count, T = data_config.eval_tile_size. Images are normalised
    whole, then tiled (tile_image); process p takes images p, p + P, ... The last batch is
    filled with all-padding examples (valid 0, label -1), and every process yields the same
    number of batches (processes with fewer tiles add all-padding batches), so multi-host
    evaluation steps stay in lockstep and one compilation serves all. Finite. max_images > 0
    keeps only the split's first max_images images (before the split between processes).

    Every process reads the whole split once per call, to count the others' tiles.
    """
    local = _local_batch_size(batch_size, process_count)
    tile = int(data_config.eval_tile_size)
    tf = _tf()
    tiles_per_process = [0] * process_count
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    buffered, yielded = 0, 0
    ds = raw_dataset(data_config, split)
    if max_images > 0:
        ds = ds.take(max_images)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    for index, example in enumerate(ds.as_numpy_iterator()):
        label = np.asarray(example["label"], np.int32)
        owner = index % process_count
        tiles_per_process[owner] += -(-label.shape[0] // tile) * -(-label.shape[1] // tile)
        if owner != process_index:
            continue
        image = normalize_image(input_view(example["image"], data_config.input_view))
        image, label = tile_image(image, label, tile)
        pending.append((image, label))
        buffered += len(label)
        while buffered >= local:
            batch, pending, buffered = _take(pending, local)
            yield batch
            yielded += 1
    if buffered:
        batch, pending, buffered = _take(pending, buffered)
        padded = _padding_batch(local, tile)
        for key, value in batch.items():
            padded[key][: len(value)] = value
        yield padded
        yielded += 1
    for _ in range(yielded, max(-(-n // local) for n in tiles_per_process)):
        yield _padding_batch(local, tile)


def _take(pending, count):
    """The first `count` tiles of the pending (image, label) chunks as a batch, and the rest."""
    image = np.concatenate([i for i, _ in pending])
    label = np.concatenate([lab for _, lab in pending])
    batch = {"image": image[:count], "label": label[:count], "valid": np.ones(count, np.float32)}
    rest = [(image[count:], label[count:])] if len(label) > count else []
    return batch, rest, len(label) - count


__all__ = [
    "eval_batches",
    "normalize_image",
    "normalize_image_tf",
    "tile_image",
    "train_batches",
]
