"""Data sources: the real DSB 2018 set (nucjax.data.dsb2018*) or synthetic nuclei.

`examples(config.data, split)` yields decoded, unaugmented examples as numpy dicts
{image (H, W, 3) uint8, label (H, W) int32, id str, modality int}, in a fixed order, whichever
the source; the input pipelines turn them into training batches, nucjax.evaluators and predict
take them whole. Where DSB 2018 images are stored is `config.data.storage`:
  tfds     the TFDS copy (nucjax.data.dsb2018; needs TensorFlow and tensorflow-datasets)
  compact  one .npz per split (nucjax.data.dsb2018_compact; numpy only)
  auto     tfds when TensorFlow imports, else compact
Both hold the same images, labels, modality and split. Synthetic data needs neither. Sources
are imported lazily so that a synthetic run never touches the DSB readers and vice versa.
"""

from __future__ import annotations

from collections.abc import Iterator

SOURCES = ("dsb2018", "synthetic")
SPLITS = ("train", "validation", "test")
STORAGES = ("auto", "tfds", "compact")


class UnknownSplitError(ValueError):
    """A split name that is not one of SPLITS."""


def _check_source(data_config) -> str:
    source = data_config.source
    if source not in SOURCES:
        raise ValueError(
            f"config.data.source={source!r} is not a known source; use one of {SOURCES}"
        )
    return source


def resolve_auto(field: str, chosen: str, choices, with_tf: str, without_tf: str) -> str:
    """config.<field> = chosen, one of `choices`, with "auto" resolved: with_tf when
    TensorFlow imports here, else without_tf (the borrowed GPU hosts have no TensorFlow)."""
    if chosen not in choices:
        raise ValueError(f"config.{field}={chosen!r}; use one of {tuple(choices)}")
    if chosen == "auto":
        from nucjax.runtime import tensorflow_available

        return with_tf if tensorflow_available() else without_tf
    return chosen


def storage(data_config) -> str:
    """'tfds' or 'compact': config.data.storage with 'auto' resolved (module docstring)."""
    return resolve_auto("data.storage", data_config.storage, STORAGES, "tfds", "compact")


def _dsb2018_kwargs(data_config) -> dict:
    return {
        "data_dir": data_config.data_dir,
        "source": data_config.download_source,
        "validation_fraction": data_config.validation_fraction,
        "split_seed": data_config.split_seed,
    }


def check_split(split: str) -> str:
    """split, or UnknownSplitError naming the known ones."""
    if split not in SPLITS:
        raise UnknownSplitError(f"unknown split {split!r}; use one of {SPLITS}")
    return split


def synthetic_seed(data_config, split: str) -> int:
    """The synthetic generator's seed for a split: distinct per (split_seed, split)."""
    check_split(split)
    return len(SPLITS) * data_config.split_seed + SPLITS.index(split)


def _tfds_examples(split: str, **kwargs) -> Iterator[dict]:
    from nucjax.data import dsb2018

    for example in dsb2018.as_dataset(split, **kwargs).as_numpy_iterator():
        image_id = example["id"]
        yield {
            "image": example["image"],
            "label": example["label"],
            "id": image_id.decode() if isinstance(image_id, bytes) else str(image_id),
            "modality": int(example["modality"]),
        }


def examples(data_config, split: str) -> Iterator[dict]:
    """The decoded examples of one split, in a fixed order (numpy dicts, see module doc)."""
    check_split(split)
    if _check_source(data_config) == "synthetic":
        from nucjax.data import synthetic

        return synthetic.synthetic_examples(
            data_config.synthetic_num_images,
            data_config.synthetic_size,
            seed=synthetic_seed(data_config, split),
            brightfield_fraction=data_config.synthetic_brightfield_fraction,
        )
    if storage(data_config) == "compact":
        from nucjax.data import dsb2018_compact

        return dsb2018_compact.examples(split, **_dsb2018_kwargs(data_config))
    return _tfds_examples(split, **_dsb2018_kwargs(data_config))


def num_examples(data_config, split: str) -> int:
    """How many images examples(data_config, split) yields."""
    check_split(split)
    if _check_source(data_config) == "synthetic":
        return int(data_config.synthetic_num_images)
    if storage(data_config) == "compact":
        from nucjax.data import dsb2018_compact

        return dsb2018_compact.num_examples(split, **_dsb2018_kwargs(data_config))
    from nucjax.data import dsb2018

    return dsb2018.num_examples(split, **_dsb2018_kwargs(data_config))
