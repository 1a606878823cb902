"""Training batches, by one of two input paths chosen by config.data.pipeline.

  tfdata  nucjax.data.pipeline_tfdata: tf.data on the host CPU, numpy batches
  device  nucjax.data.pipeline_device: the decoded split in accelerator memory, crops and
          augmentations in jitted JAX, batches already sharded over the mesh; no TensorFlow
  auto    tfdata when TensorFlow imports, else device

Both paths read the same host store (decode_shard), take the same config.data fields with the
same meaning (crop_size, flips, rot90, scale_jitter, intensity_jitter, modality_balance,
input_view) and make the stream a pure function of (seed, process, element index), so that
resuming at step k gives exactly the batches an uninterrupted run sees from step k, at no
cost. Their random draws differ (TensorFlow's stateless RNG vs JAX's threefry), so the two
paths give different, equally distributed streams: a run resumes under the path it started
with.

Batches: {image (b, S, S, 3) float32 normalised per image, label (b, S, S) int32 with -1 =
not labelled, valid (b,) float32 ones}, b = batch_size // process_count, S = crop_size.
"""

from __future__ import annotations

import numpy as np

from nucjax import data
from nucjax.data.images import MIN_STD, input_view

PIPELINES = ("auto", "tfdata", "device")


def resolve(data_config) -> str:
    """'tfdata' or 'device': config.data.pipeline with 'auto' resolved."""
    return data.resolve_auto("data.pipeline", data_config.pipeline, PIPELINES, "tfdata", "device")


def sampling_weights(modalities, balance: float) -> np.ndarray:
    """(N,) float32 probabilities of drawing each image: proportional to n_m ** -balance, n_m
    the number of images of its modality. balance 0: every image alike (the data set's own
    mix); 1: every modality alike; DSB's 490 / 98 / 15 fluorescence / histology / brightfield
    training images at 0.5 are drawn 62 / 28 / 11 percent of the time."""
    modalities = np.asarray(modalities)
    counts = np.bincount(modalities)[modalities].astype(np.float64)
    weights = counts ** -float(balance)
    return (weights / weights.sum()).astype(np.float32)


def decode_shard(data_config, split, process_index, process_count) -> dict[str, np.ndarray]:
    """This process's images of a split (image i when i % process_count == process_index),
    decoded once, after images.input_view, and packed flat for random access.

    pixels (P, 3) uint8 and labels (P,) int16 or int32 hold every image's pixels row-major one
    after another; offset, height, width, mean, scale, log_weight are per image (N,): mean and
    scale = max(std, MIN_STD) of the whole image (normalisation), log_weight the image's log
    sampling weight under data.modality_balance (sampling_weights).
    """
    pixels, labels, shapes, means, scales, modalities = [], [], [], [], [], []
    for index, example in enumerate(data.examples(data_config, split)):
        if index % process_count != process_index:
            continue
        modalities.append(int(example["modality"]))
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
        "log_weight": np.log(sampling_weights(modalities, data_config.modality_balance)),
    }


def local_batch_size(batch_size: int, process_count: int) -> int:
    if batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} processes")
    return batch_size // process_count


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
    """Endless, shuffled, augmented training batches of this process (module docstring).

    The first batch is global batch number `start_step`; batch k is identical whether
    iteration started at 0 or at k. mesh: where the device path puts its store and batches
    (default: every device); the tf.data path ignores it and yields numpy batches, which
    parallel.shard_batch places.
    """
    if resolve(data_config) == "device":
        from nucjax.data import pipeline_device

        return pipeline_device.train_batches(
            data_config,
            batch_size=batch_size,
            seed=seed,
            start_step=start_step,
            process_index=process_index,
            process_count=process_count,
            mesh=mesh,
        )
    from nucjax.data import pipeline_tfdata

    return pipeline_tfdata.train_batches(
        data_config,
        batch_size=batch_size,
        seed=seed,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
    )


__all__ = ["decode_shard", "resolve", "sampling_weights", "train_batches"]
