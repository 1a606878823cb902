"""The tf.data input path (config.data.pipeline=tfdata): normalised, augmented training crops.

Batches follow the host batch contract of nucjax.models.spec: image (B, S, S, 3) float32
normalised per image, label (B, S, S) int32 with -1 = not labelled, valid (B,) float32.

Training (train_batches) is built for exact, cheap resume. Each process decodes the whole
training split once into host memory (pipeline.decode_shard: uint8 pixels, labels, and each
whole image's normalisation statistics). The stream of examples is then a pure function of
the element index e:
  epoch, position = divmod(e, n_images)
  image = permutation(seed, epoch)[position]     (data.modality_balance = 0)
  image = draw(seed, e) by sampling_weights       (data.modality_balance > 0)
  crop, flips, rotation, zoom, jitter = stateless random draws from (seed, e)
so global batch k (elements k*B .. k*B+B-1) is the same whether iteration started at 0 or at
step k, and starting at step k costs nothing: the stream simply begins at element k*B.
Process p of P yields rows p*b .. p*b+b-1 (b = B/P) of each global batch, so the global
batches, and the training run, are the same on any number of processes (tests/test_multihost).

Normalisation is per image, (x - mean) / max(std, 1), mean and std over all pixels and
channels of the whole image, after images.input_view: the same rule (images.normalize_image)
as evaluation and predict, with the statistics computed once per image in numpy. Because it is
affine per image, applying the whole image's statistics to a crop equals normalising the
whole image and then cropping; padding is 0 after normalisation.

TensorFlow is imported only when a tf.data function runs. normalize_image and input_view live
in nucjax.data.images (numpy only), shared with evaluation and predict; the device path
(nucjax.data.pipeline_device) applies the same augmentations in JAX.
"""

from __future__ import annotations

import numpy as np

from nucjax.data.pipeline import decode_shard, local_batch_size
from nucjax.runtime import import_tensorflow

# ----------------------------------------------------------------------------- training


def _uniform(tf, key, low=0.0, high=1.0):
    return tf.random.stateless_uniform([], key, low, high)


def _image_picker(store, data_config, order_key):
    """element index e -> the image it shows: a fresh permutation per epoch, or a weighted
    draw per element when data.modality_balance > 0. Pure in (order_key, e)."""
    tf = import_tensorflow()
    num_images = int(store["height"].shape[0])

    def pick(element):
        if data_config.modality_balance > 0:
            key = tf.random.experimental.stateless_fold_in(order_key, element)
            logits = store["log_weight"][None]
            return tf.random.stateless_categorical(logits, 1, key, dtype=tf.int64)[0, 0]
        epoch, position = element // num_images, element % num_images
        epoch_key = tf.random.experimental.stateless_fold_in(order_key, epoch)
        shuffle = tf.random.stateless_uniform([num_images], epoch_key)
        return tf.argsort(shuffle, stable=True)[position]

    return pick


def _train_example_fn(store, data_config, seed: int):
    """element index e (int64) -> one augmented example; see the module docstring."""
    tf = import_tensorflow()
    store = {k: tf.constant(v) for k, v in store.items()}
    size = int(data_config.crop_size)
    zoom, jitter = float(data_config.scale_jitter), float(data_config.intensity_jitter)
    # [seed, 0]: the key of the one-process stream, shared by every process.
    base = tf.constant([seed, 0], tf.int64)
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

    pick = _image_picker(store, data_config, order_key)

    def example(element):
        i = pick(element)
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


def _global_element(i, local: int, batch_size: int, process_index: int):
    """The i-th element a process yields -> its index in the global stream: row
    process_index * local + i % local of global batch i // local."""
    return (i // local) * batch_size + process_index * local + i % local


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
    b = batch_size // process_count and S = data_config.crop_size: rows
    process_index * b .. (process_index + 1) * b - 1 of global batch number start_step, then
    of the next, and so on. Global batch k is identical whether iteration started at 0 or at
    k and whatever the process count (see the module docstring); starting at a large step
    costs no more than starting at 0. Crops: a random S x S window (zoomed by
    1 +- scale_jitter when set; labels resized nearest), images smaller than the window padded
    with image 0 and label -1; then flips, rot90 and intensity jitter as configured.
    """
    tf = import_tensorflow()
    local = local_batch_size(batch_size, process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
    store = decode_shard(data_config, "train", 0, 1)  # every image, on every process
    example = _train_example_fn(store, data_config, int(seed))
    del store
    ds = tf.data.Dataset.range(start_step * local, np.iinfo(np.int64).max // process_count)
    ds = ds.map(
        lambda i: example(_global_element(i, local, batch_size, process_index)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.batch(local, drop_remainder=True)
    if data_config.prefetch > 0:
        ds = ds.prefetch(data_config.prefetch)
    return ds.as_numpy_iterator()


__all__ = ["train_batches"]
