"""The synthetic nuclei generator and the nucjax.data.examples dispatch."""

import numpy as np
import pytest
from scipy import ndimage

from configs.common import get_config
from nucjax import data
from nucjax.data import synthetic


def _example(seed, **kwargs):
    return synthetic.synthetic_example(np.random.default_rng(seed), **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_is_a_partition_into_whole_nuclei(seed):
    image, label = _example(seed, size=(96, 80), num_nuclei=12, radius=7.0)
    assert image.shape == (96, 80, 3) and image.dtype == np.uint8
    assert label.shape == (96, 80) and label.dtype == np.int32
    ids, areas = np.unique(label[label > 0], return_counts=True)
    np.testing.assert_array_equal(ids, np.arange(1, 13))  # exactly the nuclei asked for
    assert areas.min() >= 12
    eight = np.ones((3, 3))
    for i in ids:
        assert ndimage.label(label == i, structure=eight)[1] == 1, f"nucleus {i} is split"


def test_some_nuclei_touch():
    _, label = _example(5, size=(128, 128), num_nuclei=25, radius=8.0, touch_fraction=0.8)
    a, b = label[:, :-1], label[:, 1:]
    touching = (a > 0) & (b > 0) & (a != b)
    assert touching.sum() > 10


def test_deterministic_by_seed():
    first, second, other = _example(3, size=64), _example(3, size=64), _example(4, size=64)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("seed", range(4))
def test_brightfield_is_dark_on_bright(seed):
    image, label = _example(seed, size=96, brightfield=True, num_nuclei=10)
    grey = image.astype(float).mean(-1)
    assert grey[label > 0].mean() < grey[label == 0].mean() - 20
    assert grey[label == 0].mean() > 120
    image, label = _example(seed, size=96, brightfield=False, num_nuclei=10)
    grey = image.astype(float).mean(-1)
    assert grey[label > 0].mean() > grey[label == 0].mean() + 20


def test_colour_variants():
    grey, _ = _example(0, size=48, colour="grey")
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    blue, label = _example(0, size=48, colour="blue")
    assert blue[label > 0, 2].mean() > 2 * blue[label > 0, 0].mean()


def test_dataset_elements_and_determinism():
    first = list(synthetic.synthetic_examples(3, (40, 48), seed=7, brightfield_fraction=0.5))
    again = list(synthetic.synthetic_examples(3, (40, 48), seed=7, brightfield_fraction=0.5))
    assert [e["id"] for e in first] == ["synthetic-00000", "synthetic-00001", "synthetic-00002"]
    for e, f in zip(first, again, strict=True):
        assert e["image"].shape == (40, 48, 3) and e["image"].dtype == np.uint8
        assert e["label"].shape == (40, 48) and e["label"].dtype == np.int32
        assert e["modality"] in (synthetic.FLUORESCENCE, synthetic.BRIGHTFIELD, synthetic.HISTOLOGY)
        np.testing.assert_array_equal(e["image"], f["image"])
    # Image i depends on (seed, i) only, not on how many images the set has.
    longer = next(synthetic.synthetic_examples(5, (40, 48), 7, 0.5))
    np.testing.assert_array_equal(longer["label"], first[0]["label"])


def _synthetic_config(**overrides):
    config = get_config().data
    config.source = "synthetic"
    config.synthetic_num_images = 2
    config.synthetic_size = 32
    config.update(overrides)
    return config


def test_splits_differ():
    config = _synthetic_config()
    labels = {
        split: next(data.examples(config, split))["label"]
        for split in ("train", "validation", "test")
    }
    assert not np.array_equal(labels["train"], labels["validation"])
    assert not np.array_equal(labels["validation"], labels["test"])
    assert data.num_examples(config, "validation") == 2
    assert data.synthetic_seed(config, "train") != data.synthetic_seed(
        _synthetic_config(split_seed=1), "train"
    )


def test_unknown_source_and_split():
    with pytest.raises(ValueError, match=r"config\.data\.source='nope'.*dsb2018.*synthetic"):
        data.examples(_synthetic_config(source="nope"), "train")
    with pytest.raises(ValueError, match="config.data.source"):
        data.num_examples(_synthetic_config(source="nope"), "train")
    with pytest.raises(ValueError, match="split"):
        data.num_examples(_synthetic_config(), "training")
