"""DSB 2018 fetch, readers and TFDS builder, on tiny fake sources built here.

The real-data test at the end builds the real set (the session fixture `dsb_data_dir`).
"""

import functools
import heapq
import http.server
import io
import os
import pathlib
import shutil
import threading
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from nucjax.data import dsb2018, dsb2018_fetch, dsb2018_readers, images, rle
from nucjax.data.dsb2018 import DamagedBuildError
from nucjax.data.dsb2018_readers import Dsb2018Error

# ------------------------------------------------------------------------ fake source helpers


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def fake_instances(rng, shape) -> list[np.ndarray]:
    """Non-overlapping ellipses, one per cell of a 2x2 grid, some cells empty."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width]
    masks = []
    for cy in (height // 4, 3 * height // 4):
        for cx in (width // 4, 3 * width // 4):
            if rng.random() < 0.25 and masks:
                continue
            ry, rx = rng.uniform(2, height / 5), rng.uniform(2, width / 5)
            masks.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return masks


def fake_image(rng, shape, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(stored pixels, expected RGB) for kind rgba (grey, alpha varies), rgb or grey."""
    grey = rng.integers(0, 60, shape, dtype=np.uint8)
    if kind == "rgba":
        stored = np.stack([grey, grey, grey, rng.integers(1, 256, shape, dtype=np.uint8)], -1)
        return stored, stored[..., :3]
    if kind == "rgb":
        stored = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        return stored, stored
    return grey, np.repeat(grey[..., None], 3, axis=2)


def write_fake_source(folder: pathlib.Path, *, num_train=10, solution=False, seed=0) -> dict:
    """stage1_* files in `folder`; returns the expected examples and the checksums to pass."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {"train": {}, "test": {}}
    kinds = ["rgba", "rgb", "grey"]
    with (
        zipfile.ZipFile(folder / "stage1_train.zip", "w", zipfile.ZIP_DEFLATED) as zf,
        open(folder / "stage1_train_labels.csv", "w") as csv,
    ):
        csv.write("ImageId,EncodedPixels\n")
        for i in range(num_train):
            image_id = f"{rng.integers(1 << 60):016x}"
            shape = (int(rng.integers(24, 40)), int(rng.integers(24, 40)))
            stored, image = fake_image(rng, shape, kinds[i % 3])
            zf.writestr(f"{image_id}/", b"")
            zf.writestr(f"{image_id}/images/{image_id}.png", png_bytes(stored))
            masks = fake_instances(rng, shape)
            names = [f"{rng.integers(1 << 60):016x}.png" for _ in masks]
            label = np.zeros(shape, np.int32)
            for name, mask in zip(names, masks, strict=True):  # written in random name order
                zf.writestr(f"{image_id}/masks/{name}", png_bytes(mask.astype(np.uint8) * 255))
            for instance, name in enumerate(sorted(names), start=1):
                mask = masks[names.index(name)]
                label[mask] = instance
                csv.write(f"{image_id},{rle.rle_encode(mask)}\n")
            expected["train"][image_id] = (image, label)
    with zipfile.ZipFile(folder / "stage1_test.zip", "w") as zf:
        for i, kind in enumerate(["rgb", "rgba", "grey"]):
            image_id = f"test{i}"
            stored, image = fake_image(rng, (30, 20 + i), kind)
            zf.writestr(f"{image_id}/images/{image_id}.png", png_bytes(stored))
            label = np.zeros(image.shape[:2], np.int32)
            label[2:5, 3:6], label[10:12, 1:3] = 1, 2
            expected["test"][image_id] = (image, label)
    if solution:
        with open(folder / "stage1_solution.csv", "w") as csv:
            csv.write("ImageId,EncodedPixels,Height,Width,Usage\n")
            for image_id, (image, label) in expected["test"].items():
                for text in rle.label_to_rles(label):
                    csv.write(f"{image_id},{text},{image.shape[0]},{image.shape[1]},Public\n")
    expected["checksums"] = {
        name: dsb2018_fetch.sha256_file(folder / name) for name in dsb2018_fetch.PINNED_SHA256
    }
    return expected


@pytest.fixture
def fake(tmp_path):
    source = tmp_path / "source"
    return source, write_fake_source(source)


def rewrite_zip(path: pathlib.Path, edit) -> None:
    """Rewrites a zip, passing each (name, data) through edit(name, data) -> data or None."""
    with zipfile.ZipFile(path) as zf:
        entries = [(info.filename, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            data = edit(name, data)
            if data is not None:
                zf.writestr(name, data)


def first_mask(path: pathlib.Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return sorted(n for n in zf.namelist() if "/masks/" in n and n.endswith(".png"))[0]


# ----------------------------------------------------------------------------------- readers


def test_read_train_zip_matches_what_was_written(fake):
    source, expected = fake
    got = list(dsb2018_readers.read_train_zip(source / "stage1_train.zip"))
    assert [image_id for image_id, _, _ in got] == sorted(expected["train"])
    for image_id, image, label in got:
        want_image, want_label = expected["train"][image_id]
        assert image.dtype == np.uint8 and image.shape == (*want_label.shape, 3)
        assert label.dtype == np.int32
        np.testing.assert_array_equal(image, want_image)  # alpha dropped, grey repeated
        np.testing.assert_array_equal(label, want_label)  # ids in sorted mask-name order


def test_csv_reader_equals_png_reader(fake):
    source, _ = fake
    from_png = dsb2018_readers.read_train_zip(source / "stage1_train.zip")
    from_csv = dsb2018_readers.read_train_csv(
        source / "stage1_train.zip", source / "stage1_train_labels.csv"
    )
    for (id_a, image_a, label_a), (id_b, image_b, label_b) in zip(from_png, from_csv, strict=True):
        assert id_a == id_b
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(label_a, label_b)


def test_read_image_zip_test_set(fake):
    source, expected = fake
    got = dict(dsb2018_readers.read_image_zip(source / "stage1_test.zip"))
    assert sorted(got) == sorted(expected["test"])
    for image_id, image in got.items():
        np.testing.assert_array_equal(image, expected["test"][image_id][0])


# ------------------------------------------------------------------------------- bad inputs


def test_truncated_zip(fake):
    source, _ = fake
    path = source / "stage1_train.zip"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(Dsb2018Error, match="stage1_train.zip: not a readable zip"):
        list(dsb2018_readers.read_train_zip(path))


def test_corrupt_zip_member(fake):
    source, _ = fake
    path = source / "stage1_train.zip"
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(".png"))
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename)  # past the local header
    data[start : start + 16] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(Dsb2018Error, match=f"member {info.filename} is corrupt"):
        list(dsb2018_readers.read_train_zip(path))


def test_corrupt_png(fake):
    source, _ = fake
    path, bad = source / "stage1_train.zip", first_mask(source / "stage1_train.zip")
    rewrite_zip(path, lambda name, data: data[:40] if name == bad else data)
    with pytest.raises(Dsb2018Error, match=f"{bad}: not a readable PNG"):
        list(dsb2018_readers.read_train_zip(path))


def test_mask_size_differs_from_image(fake):
    source, _ = fake
    path, bad = source / "stage1_train.zip", first_mask(source / "stage1_train.zip")
    small = png_bytes(np.zeros((5, 5), np.uint8))
    rewrite_zip(path, lambda name, data: small if name == bad else data)
    with pytest.raises(Dsb2018Error, match=f"{bad}: mask is 5x5, its image"):
        list(dsb2018_readers.read_train_zip(path))


def test_overlapping_masks(fake):
    source, expected = fake
    path = source / "stage1_train.zip"
    image_id = next(i for i, (_, label) in sorted(expected["train"].items()) if label.max() > 1)
    with zipfile.ZipFile(path) as zf:
        first, second = sorted(n for n in zf.namelist() if n.startswith(f"{image_id}/masks/"))[:2]
    full = png_bytes(np.full(expected["train"][image_id][1].shape, 255, np.uint8))
    rewrite_zip(path, lambda name, data: full if name == first else data)  # covers the rest
    with pytest.raises(Dsb2018Error, match=f"{second}: mask overlaps"):
        list(dsb2018_readers.read_train_zip(path))


def test_empty_masks_folder_is_an_error(fake):
    source, expected = fake
    path, victim = source / "stage1_train.zip", sorted(expected["train"])[0]
    rewrite_zip(path, lambda name, data: None if name.startswith(f"{victim}/masks/") else data)
    with pytest.raises(Dsb2018Error, match=f"{victim}/masks/ is empty"):
        list(dsb2018_readers.read_train_zip(path))


def test_csv_id_not_in_zip(fake):
    source, _ = fake
    with open(source / "stage1_train_labels.csv", "a") as csv:
        csv.write("ghost0123,1 3\n")
    with pytest.raises(Dsb2018Error, match="not in .*stage1_train.zip, e.g. ghost0123"):
        list(
            dsb2018_readers.read_train_csv(
                source / "stage1_train.zip", source / "stage1_train_labels.csv"
            )
        )


def test_malformed_csv_row_names_csv_and_image(fake):
    source, expected = fake
    path, victim = source / "stage1_train_labels.csv", sorted(expected["train"])[0]
    lines = path.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(victim))
    lines[row] = f"{victim},1 2 3"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(Dsb2018Error, match=f"labels.csv: image {victim}: .*odd number"):
        list(dsb2018_readers.read_train_csv(source / "stage1_train.zip", path))


# ------------------------------------------------------------------------------------ fetch


def test_fetch_copies_verifies_and_does_not_refetch(fake, tmp_path, monkeypatch):
    source, expected = fake
    folder = dsb2018_fetch.fetch(
        data_dir=tmp_path / "tfds", source=str(source), checksums=expected["checksums"]
    )
    assert folder == tmp_path / "tfds" / "downloads" / "dsb2018"
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected["checksums"])  # no .part
    for name in expected["checksums"]:
        assert (folder / name).read_bytes() == (source / name).read_bytes()

    asked = []

    def absent(source, name):
        asked.append(name)
        raise FileNotFoundError(name)

    monkeypatch.setattr(dsb2018_fetch, "_open_source_file", absent)
    dsb2018_fetch.fetch(
        data_dir=tmp_path / "tfds", source=str(source), checksums=expected["checksums"]
    )
    assert asked == ["stage1_solution.csv"]  # only the absent optional file is looked for


def test_fetch_checksum_mismatch(fake, tmp_path):
    source, expected = fake
    sums = dict(expected["checksums"], **{"stage1_test.zip": "0" * 64})
    actual = expected["checksums"]["stage1_test.zip"]
    with pytest.raises(
        Dsb2018Error, match=f"stage1_test.zip: .*expected sha256 0{{64}}, got {actual}"
    ):
        dsb2018_fetch.fetch(data_dir=tmp_path, source=str(source), checksums=sums)
    assert not (tmp_path / "downloads" / "dsb2018" / "stage1_test.zip").exists()
    assert not (tmp_path / "downloads" / "dsb2018" / "stage1_test.zip.part").exists()


def test_pinned_sums_reject_fake_files(fake, tmp_path):
    source, _ = fake
    with pytest.raises(Dsb2018Error, match="stage1_train.zip: checksum mismatch"):
        dsb2018_fetch.fetch(data_dir=tmp_path, source=str(source))


def test_fetch_missing_file(fake, tmp_path):
    source, expected = fake
    (source / "stage1_train_labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="stage1_train_labels.csv: not found in the source"):
        dsb2018_fetch.fetch(data_dir=tmp_path, source=str(source), checksums=expected["checksums"])


def test_fetch_file_url_and_env_source(fake, tmp_path, monkeypatch):
    source, expected = fake
    monkeypatch.setenv("NUCJAX_DSB2018_SOURCE", source.as_uri())
    monkeypatch.setenv("TFDS_DATA_DIR", os.fspath(tmp_path / "env_tfds"))
    folder = dsb2018_fetch.fetch(checksums=expected["checksums"])
    assert folder == tmp_path / "env_tfds" / "downloads" / "dsb2018"
    assert (folder / "stage1_train.zip").is_file()


def test_fetch_over_http_with_optional_solution(tmp_path):
    source = tmp_path / "source"
    expected = write_fake_source(source, solution=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=os.fspath(source))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        folder = dsb2018_fetch.fetch(
            data_dir=tmp_path / "a", source=url, checksums=expected["checksums"]
        )
        assert (folder / "stage1_solution.csv").read_bytes() == (
            source / "stage1_solution.csv"
        ).read_bytes()
        (source / "stage1_solution.csv").unlink()  # optional: a 404 is fine
        folder = dsb2018_fetch.fetch(
            data_dir=tmp_path / "b", source=url, checksums=expected["checksums"]
        )
        assert not (folder / "stage1_solution.csv").exists()
        (source / "stage1_test.zip").unlink()  # required: a 404 is an error
        with pytest.raises(FileNotFoundError, match="stage1_test.zip: not found at .*404"):
            dsb2018_fetch.fetch(
                data_dir=tmp_path / "c", source=url, checksums=expected["checksums"]
            )
    finally:
        server.shutdown()


# -------------------------------------------------------------------------------- splitting


def test_split_ids_deterministic_and_sized():
    ids = [f"{i:04x}" for i in range(670)]
    train, validation = dsb2018.split_ids(ids[::-1], 0.1, 0)  # input order is irrelevant
    assert (len(train), len(validation)) == (603, 67)
    assert sorted(train + validation) == ids and train == sorted(train)
    assert (train, validation) == dsb2018.split_ids(ids, 0.1, 0)
    assert dsb2018.split_ids(ids, 0.1, 1)[1] != validation
    order = np.random.default_rng(0).permutation(670)
    assert validation == sorted(ids[i] for i in order[:67])
    assert dsb2018.split_ids(ids, 0.0, 0) == (ids, [])
    with pytest.raises(ValueError, match="validation_fraction"):
        dsb2018.split_ids(ids, 1.0, 0)


def test_config_names():
    assert dsb2018.config_name(0.1, 0) == "val10_seed0"
    assert dsb2018.config_name(0.125, 3) == "val12p5_seed3"
    assert dsb2018.builder_config(0.1, 0) is dsb2018.Dsb2018.BUILDER_CONFIGS[0]
    config = dsb2018.builder_config(0.25, 2)
    assert (config.name, config.validation_fraction, config.split_seed) == ("val25_seed2", 0.25, 2)


# ----------------------------------------------------------------------------- TFDS builder


def load_split(data_dir, split, **kwargs) -> dict:
    ds = dsb2018.as_dataset(split, data_dir=data_dir, **kwargs)
    return {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}


def test_builder_on_fake_source(fake, tmp_path, monkeypatch):
    source, expected = fake

    def no_network(*args, **kwargs):
        raise AssertionError("network call")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    kwargs = dict(
        source=str(source), validation_fraction=0.3, split_seed=0, checksums=expected["checksums"]
    )
    builder = dsb2018.prepare(data_dir=tmp_path, **kwargs)
    assert builder.info.name == "dsb2018" and builder.builder_config.name == "val30_seed0"
    assert str(builder.info.version) == "1.0.0"
    assert {
        s: dsb2018.num_examples(s, data_dir=tmp_path, **kwargs)
        for s in ("train", "validation", "test")
    } == {"train": 7, "validation": 3, "test": 3}
    train, validation = (load_split(tmp_path, s, **kwargs) for s in ("train", "validation"))
    assert (sorted(train), sorted(validation)) == dsb2018.split_ids(expected["train"], 0.3, 0)
    assert list(train) == sorted(train)  # written and read in sorted id order
    for image_id, example in {**train, **validation}.items():
        image, label = expected["train"][image_id]
        assert example["image"].dtype == np.uint8 and example["label"].dtype == np.int32
        np.testing.assert_array_equal(example["image"], image)
        np.testing.assert_array_equal(example["label"], label)
        assert example["modality"] == images.MODALITIES.index(images.modality_of(image))
    test = load_split(tmp_path, "test", **kwargs)
    assert sorted(test) == sorted(expected["test"])
    for image_id, example in test.items():
        np.testing.assert_array_equal(example["image"], expected["test"][image_id][0])
        assert example["label"].shape == example["image"].shape[:2]
        assert (example["label"] == -1).all()  # no stage1_solution.csv: not labelled

    # Idempotent: a built dataset is reused without touching the source.
    shutil.rmtree(source)
    again = dsb2018.prepare(data_dir=tmp_path, **kwargs)
    assert again.info.splits["train"].num_examples == 7


def test_builder_split_seed_and_solution(tmp_path):
    source = tmp_path / "source"
    expected = write_fake_source(source, solution=True, num_train=12)
    common = dict(source=str(source), checksums=expected["checksums"], validation_fraction=0.25)
    seed0 = load_split(tmp_path / "a", "validation", split_seed=0, **common)
    seed0_again = load_split(tmp_path / "b", "validation", split_seed=0, **common)
    seed1 = load_split(tmp_path / "a", "validation", split_seed=1, **common)
    assert list(seed0) == list(seed0_again) and len(seed0) == 3
    assert sorted(seed1) != sorted(seed0)
    test = load_split(tmp_path / "a", "test", split_seed=0, **common)
    for image_id, example in test.items():
        np.testing.assert_array_equal(example["label"], expected["test"][image_id][1])


def test_zero_validation_fraction_has_no_validation_split(fake, tmp_path):
    source, expected = fake
    kwargs = dict(source=str(source), validation_fraction=0.0, checksums=expected["checksums"])
    assert dsb2018.num_examples("train", data_dir=tmp_path, **kwargs) == 10
    assert dsb2018.num_examples("validation", data_dir=tmp_path, **kwargs) == 0
    with pytest.raises(ValueError, match="no validation split"):
        dsb2018.as_dataset("validation", data_dir=tmp_path, **kwargs)
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        dsb2018.num_examples("valid", data_dir=tmp_path, **kwargs)


def test_failed_build_never_looks_complete(fake, tmp_path):
    source, expected = fake
    path = source / "stage1_test.zip"
    good = path.read_bytes()
    rewrite_zip(path, lambda name, data: data[:50] if name.startswith("test1/") else data)
    sums = dict(expected["checksums"], **{"stage1_test.zip": None})
    with pytest.raises(Dsb2018Error, match="test1.png: not a readable PNG"):
        dsb2018.prepare(data_dir=tmp_path, source=str(source), checksums=sums)
    builder = dsb2018.Dsb2018(config=dsb2018.builder_config(), data_dir=os.fspath(tmp_path))
    assert not builder.is_prepared()
    path.write_bytes(good)
    (tmp_path / "downloads" / "dsb2018" / "stage1_test.zip").unlink()
    builder = dsb2018.prepare(data_dir=tmp_path, source=str(source), checksums=sums)
    assert builder.info.splits["test"].num_examples == 3


def test_build_removes_what_a_killed_build_left(fake, tmp_path):
    """A build killed mid-way leaves TFDS's incomplete.* folder; the next build deletes it."""
    source, expected = fake
    version_dir = dsb2018.Dsb2018(config=dsb2018.builder_config(), data_dir=str(tmp_path)).data_dir
    stale = pathlib.Path(version_dir).parent / "incomplete.AB12CD_1.0.0"
    (stale / "dsb2018-train.tfrecord-00000-of-00001").parent.mkdir(parents=True)
    (stale / "dsb2018-train.tfrecord-00000-of-00001").write_bytes(b"half a record")
    builder = dsb2018.prepare(
        data_dir=tmp_path, source=str(source), checksums=expected["checksums"]
    )
    assert not stale.exists()
    assert sorted(p.name for p in stale.parent.iterdir()) == ["1.0.0"]
    assert builder.info.splits["train"].num_examples == 9


def test_builder_rejects_csv_id_missing_from_zip(fake, tmp_path):
    source, expected = fake
    with open(source / "stage1_train_labels.csv", "a") as csv:
        csv.write("ghost0123,1 3\n")
    sums = dict(expected["checksums"], **{"stage1_train_labels.csv": None})
    with pytest.raises(Dsb2018Error, match="ghost0123"):
        dsb2018.prepare(data_dir=tmp_path, source=str(source), checksums=sums)


def _damage(path: pathlib.Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(data)
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()


@pytest.mark.parametrize(
    "how, what",
    [("flip", "corrupted record at"), ("truncate", "truncated record"), ("delete", "missing")],
)
def test_damaged_build_names_the_file_and_the_rebuild(fake, tmp_path, how, what):
    """A damaged record file of a built set (here in the test's own data_dir): one line naming
    it and the command that clears the build; doing what it says rebuilds the same examples."""
    source, expected = fake
    kwargs = dict(source=str(source), checksums=expected["checksums"], validation_fraction=0.3)
    builder = dsb2018.prepare(data_dir=tmp_path, **kwargs)
    before = load_split(tmp_path, "train", **kwargs)
    (record,) = pathlib.Path(builder.data_dir).glob("dsb2018-train.tfrecord*")
    _damage(record, how)
    with pytest.raises(DamagedBuildError) as err:
        dsb2018.as_dataset("train", data_dir=tmp_path, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{record}: damaged dsb2018 build (") and "\n" not in message
    assert what in message and f"`rm -r {builder.data_dir}`" in message
    with pytest.raises(DamagedBuildError):  # still damaged: found again, not cached as good
        dsb2018.num_examples("train", data_dir=tmp_path, **kwargs)
    shutil.rmtree(builder.data_dir)  # what the message says
    after = load_split(tmp_path, "train", **kwargs)
    assert list(after) == list(before)
    for image_id, example in after.items():
        np.testing.assert_array_equal(example["label"], before[image_id]["label"])
        np.testing.assert_array_equal(example["image"], before[image_id]["image"])


# -------------------------------------------------------------------------------- real data


def sorted_examples(data_dir, *splits):
    streams = [tfds.as_numpy(dsb2018.as_dataset(s, data_dir=data_dir)) for s in splits]
    return heapq.merge(*streams, key=lambda example: example["id"])


@pytest.mark.real_data
def test_real_dataset(dsb_data_dir, dsb_source):
    counts = {
        s: dsb2018.num_examples(s, data_dir=dsb_data_dir) for s in ("train", "validation", "test")
    }
    assert counts == {"train": 603, "validation": 67, "test": 65}
    validation_ids = [
        ex["id"].decode()
        for ex in tfds.as_numpy(
            dsb2018.as_dataset("validation", data_dir=dsb_data_dir).map(lambda ex: {"id": ex["id"]})
        )
    ]
    from_png = dsb2018_readers.read_train_zip(dsb_source / "stage1_train.zip")
    ids, nuclei = [], 0
    for example, (image_id, image, label) in zip(
        sorted_examples(dsb_data_dir, "train", "validation"), from_png, strict=True
    ):
        assert example["id"].decode() == image_id
        assert example["label"].shape == example["image"].shape[:2]
        np.testing.assert_array_equal(example["image"], image)
        np.testing.assert_array_equal(example["label"], label)  # CSV labels == mask PNGs
        ids.append(image_id)
        nuclei += int(label.max())
    assert len(ids) == 670 and nuclei == 29_461
    assert validation_ids == dsb2018.split_ids(ids, 0.1, 0)[1]
    test = list(tfds.as_numpy(dsb2018.as_dataset("test", data_dir=dsb_data_dir)))
    assert len(test) == 65
    assert all(
        (ex["label"] == -1).all() and ex["label"].shape == ex["image"].shape[:2] for ex in test
    )
