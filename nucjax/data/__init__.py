"""Data sources: the real DSB 2018 set (nucjax.data.dsb2018) or synthetic nuclei.

`raw_dataset(config.data, split)` gives decoded, unaugmented examples as a tf.data.Dataset of
{image (H, W, 3) uint8, label (H, W) int32, id string, modality int64}, whichever the source;
nucjax.data.pipeline turns them into training batches, nucjax.evaluators scores them whole.
Sources are imported lazily so that a synthetic run never touches the DSB reader and vice
versa.
"""

from __future__ import annotations

SOURCES = ("dsb2018", "synthetic")
SPLITS = ("train", "validation", "test")


class UnknownSplitError(ValueError):
    """A split name that is not one of SPLITS."""


def _check_source(data_config) -> str:
    source = data_config.source
    if source not in SOURCES:
        raise ValueError(
            f"config.data.source={source!r} is not a known source; use one of {SOURCES}"
        )
    return source


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


def raw_dataset(data_config, split: str):
    """The decoded examples of one split, in a fixed order (tf.data.Dataset, see module doc)."""
    check_split(split)
    if _check_source(data_config) == "dsb2018":
        from nucjax.data import dsb2018

        return dsb2018.as_dataset(split, **_dsb2018_kwargs(data_config))
    from nucjax.data import synthetic

    return synthetic.synthetic_dataset(
        data_config.synthetic_num_images,
        data_config.synthetic_size,
        seed=synthetic_seed(data_config, split),
        brightfield_fraction=data_config.synthetic_brightfield_fraction,
    )


def num_examples(data_config, split: str) -> int:
    """How many images raw_dataset(data_config, split) holds."""
    check_split(split)
    if _check_source(data_config) == "dsb2018":
        from nucjax.data import dsb2018

        return dsb2018.num_examples(split, **_dsb2018_kwargs(data_config))
    return int(data_config.synthetic_num_images)
