"""The compact (TensorFlow-free) copy of the DSB 2018 splits, on a fake source and the real set."""

import numpy as np
import pytest

from nucjax.data import dsb2018_compact
from nucjax.data.dsb2018_readers import split_ids
from tests.data.test_dsb2018 import write_fake_source


@pytest.fixture
def fake_compact(tmp_path):
    source = tmp_path / "source"
    expected = write_fake_source(source, num_train=10)
    kwargs = {
        "data_dir": tmp_path / "data",
        "source": str(source),
        "validation_fraction": 0.3,
        "split_seed": 0,
        "checksums": expected["checksums"],
    }
    return expected, kwargs


def test_splits_hold_what_was_written(fake_compact):
    expected, kwargs = fake_compact
    train, validation = split_ids(expected["train"], 0.3, 0)
    for split, ids in (("train", train), ("validation", validation)):
        got = list(dsb2018_compact.examples(split, **kwargs))
        assert [e["id"] for e in got] == ids
        assert dsb2018_compact.num_examples(split, **kwargs) == len(ids)
        for example in got:
            image, label = expected["train"][example["id"]]
            assert example["image"].dtype == np.uint8 and example["label"].dtype == np.int32
            np.testing.assert_array_equal(example["image"], image)
            np.testing.assert_array_equal(example["label"], label)
    test = list(dsb2018_compact.examples("test", **kwargs))
    assert [e["id"] for e in test] == sorted(expected["test"])
    for example in test:  # no stage1_solution.csv: not labelled
        np.testing.assert_array_equal(example["image"], expected["test"][example["id"]][0])
        assert (example["label"] == -1).all()
    # Grey images are stored with one channel: PNG colour type (IHDR byte 25) 0, else 2 (RGB).
    store = dsb2018_compact.load("train", **kwargs)
    kinds = set()
    for i in range(len(store)):
        png = store.png[store.png_offset[i] : store.png_offset[i + 1]].tobytes()
        image = store.example(i)["image"]
        kinds.add(png[25])
        assert png[25] == (0 if (image[..., :1] == image).all() else 2)
    assert kinds == {0, 2}


def test_prepare_is_idempotent_and_an_interrupted_build_leaves_nothing(fake_compact, monkeypatch):
    expected, kwargs = fake_compact
    calls, real_save = [], np.savez_compressed

    def crash_while_writing(file, **arrays):
        calls.append(1)
        if len(calls) == 2:  # the validation split: half a file, then the crash
            file.write(b"PK partial")
            raise KeyboardInterrupt
        real_save(file, **arrays)

    monkeypatch.setattr(np, "savez_compressed", crash_while_writing)
    with pytest.raises(KeyboardInterrupt):
        dsb2018_compact.prepare(**kwargs)
    folder = dsb2018_compact.split_path("train", kwargs["data_dir"], 0.3, 0).parent
    assert sorted(p.name for p in folder.iterdir()) == ["train.npz"]  # no temporary, no partial
    monkeypatch.setattr(np, "savez_compressed", real_save)
    assert dsb2018_compact.prepare(**kwargs) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["test.npz", "train.npz", "validation.npz"]
    for name in ("stage1_train.zip", "stage1_test.zip"):  # built: the source is not read again
        (kwargs["data_dir"] / "downloads" / "dsb2018" / name).unlink()
    assert len(list(dsb2018_compact.examples("validation", **kwargs))) == 3


@pytest.mark.real_data
def test_real_compact_equals_tfds(dsb_data_dir, dsb_source):
    """The compact validation split is the TFDS one: same ids, order, pixels, labels, modality."""
    from nucjax.data import dsb2018

    kwargs = {"data_dir": dsb_data_dir, "source": str(dsb_source)}
    assert dsb2018_compact.num_examples("validation", **kwargs) == 67
    # Only the split asked for is built (the training split would take most of a minute).
    folder = dsb2018_compact.split_path("validation", dsb_data_dir).parent
    assert sorted(p.name for p in folder.iterdir()) == ["validation.npz"]
    tfds_examples = dsb2018.as_dataset("validation", data_dir=dsb_data_dir).as_numpy_iterator()
    compact = dsb2018_compact.examples("validation", **kwargs)
    for want, got in zip(tfds_examples, compact, strict=True):
        assert got["id"] == want["id"].decode() and got["modality"] == int(want["modality"])
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
