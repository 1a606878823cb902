"""Fuzzing the readers of untrusted files: damaged bytes give nucjax's named errors, never raw ones.

Seeded and bounded (a fixed number of mutants, a few seconds in all): the image readers
(image_io.read_image, dsb2018_readers.decode_png, the zip and CSV readers) get truncated,
bit-flipped, spliced and random versions of small valid files, and the RLE parser gets mutated
and random strings. Each input must either read as what the reader promises or raise the
reader's own error (UnsupportedImageError, Dsb2018Error, RleError) with a message; any other
exception is a bug in the reader. A failure names the mutant's index, so it can be replayed.
"""

import io
import zipfile

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucjax import image_io
from nucjax.data import dsb2018_readers, rle
from nucjax.data.dsb2018_readers import Dsb2018Error

SEED = 20261130


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _tiff(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


def _seeds() -> dict[str, bytes]:
    """Small valid files of every kind the readers take, by the suffix they are read under."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (12, 10), dtype=np.uint8)
    rgb = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    return {
        "grey.png": _png(grey),
        "rgb.png": _png(rgb),
        "deep.png": _png(grey.astype(np.uint16) * 257),
        "photo.jpg": _jpeg(rgb),
        "deep.tif": _tiff(grey.astype(np.uint16)),
        "float.tif": _tiff(grey.astype(np.float32) / 255),
        "planar.tif": _tiff(np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate"),
        "zlib.tif": _tiff(rgb, photometric="rgb", compression="zlib"),
    }


def mutate(rng: np.random.Generator, good: bytes) -> bytes:
    """One damaged version of `good`: truncated, bytes flipped or overwritten, bytes inserted,
    its header followed by noise, or noise alone."""
    data = bytearray(good)
    kind = rng.integers(6)
    if kind == 0:
        return bytes(data[: rng.integers(len(data))])
    if kind == 1:
        for i in rng.integers(len(data), size=rng.integers(1, 9)):
            data[i] ^= 1 << int(rng.integers(8))
        return bytes(data)
    if kind == 2:
        start = int(rng.integers(len(data)))
        span = int(rng.integers(1, 32))
        data[start : start + span] = rng.bytes(span)
        return bytes(data)
    if kind == 3:
        at = int(rng.integers(len(data)))
        return bytes(data[:at]) + rng.bytes(int(rng.integers(1, 64))) + bytes(data[at:])
    if kind == 4:
        return bytes(data[: rng.integers(4, 64)]) + rng.bytes(int(rng.integers(0, 256)))
    return rng.bytes(int(rng.integers(0, 256)))


def _check_image(array: np.ndarray) -> None:
    """What read_image promises: (H, W) or (H, W, 1..4), at least MIN_SIDE, finite numbers."""
    assert array.ndim in (2, 3) and min(array.shape[:2]) >= image_io.MIN_SIDE
    assert array.ndim == 2 or 1 <= array.shape[2] <= 4
    assert array.dtype.kind in "biuf"
    assert array.dtype.kind != "f" or np.isfinite(array).all()


def test_read_image_on_damaged_files(tmp_path):
    rng = np.random.default_rng(SEED)
    seeds = _seeds()
    for name, good in seeds.items():  # the seeds themselves read
        _check_image(image_io.read_image(str(_write(tmp_path / name, good))))
    outcomes = {"read": 0, "refused": 0}
    for i in range(400):
        name = list(seeds)[i % len(seeds)]
        path = _write(tmp_path / f"{i}_{name}", mutate(rng, seeds[name]))
        try:
            array = image_io.read_image(str(path))
        except image_io.UnsupportedImageError as err:
            assert str(err).startswith(f"{path.name}: "), (i, str(err))
            outcomes["refused"] += 1
            continue
        except Exception as err:
            pytest.fail(f"mutant {i} of {name}: raw {type(err).__name__}: {err}")
        _check_image(array)
        outcomes["read"] += 1
    assert min(outcomes.values()) > 20  # the mutants reached both outcomes


def test_tiff_declaring_gigapixels_is_refused_before_reading(tmp_path):
    """A header claiming 60000 x 60000 pixels (the data is 16 x 16): refused from the header,
    not allocated and filled (the fuzz found tifffile filling 2.4 GB for such a file)."""
    path = tmp_path / "huge.tif"
    path.write_bytes(_tiff(np.zeros((16, 16), np.uint8)))
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        fields = [(tags[n].valueoffset, tags[n].dtype) for n in ("ImageWidth", "ImageLength")]
    data = bytearray(path.read_bytes())
    for offset, dtype in fields:  # TIFF type 3 SHORT, 4 LONG; tifffile writes little-endian
        size = 2 if int(dtype) == 3 else 4
        data[offset : offset + size] = (60000).to_bytes(size, "little")
    path.write_bytes(data)
    huge = r"huge.tif: declares \(60000, 60000\)"
    with pytest.raises(image_io.UnsupportedImageError, match=huge):
        image_io.read_image(str(path))


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_decode_png_on_damaged_bytes():
    rng = np.random.default_rng(SEED + 1)
    seeds = [v for k, v in _seeds().items() if k.endswith(".png")]
    refused = 0
    for i in range(400):
        try:
            array = dsb2018_readers.decode_png(mutate(rng, seeds[i % len(seeds)]), f"m{i}.png")
        except Dsb2018Error as err:
            assert str(err).startswith(f"m{i}.png: "), (i, str(err))
            refused += 1
            continue
        except Exception as err:
            pytest.fail(f"mutant {i}: raw {type(err).__name__}: {err}")
        assert array.dtype == np.uint8 and array.ndim in (2, 3)
        assert array.ndim == 2 or array.shape[2] in (3, 4)
    assert refused > 100


def _good_zip() -> bytes:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for image_id in ("a1", "b2"):
            zf.writestr(f"{image_id}/images/{image_id}.png", _png(rng.integers(0, 255, (9, 9, 3))
                                                                  .astype(np.uint8)))  # fmt: skip
            mask = np.zeros((9, 9), np.uint8)
            mask[2:5, 3:6] = 255
            zf.writestr(f"{image_id}/masks/m.png", _png(mask))
    return buffer.getvalue()


def test_zip_readers_on_damaged_zips(tmp_path):
    rng = np.random.default_rng(SEED + 2)
    good = _good_zip()
    labels = [label for _, _, label in dsb2018_readers.read_train_zip(_write(tmp_path / "g", good))]
    assert [int(label.max()) for label in labels] == [1, 1]
    refused = 0
    for i in range(300):
        path = _write(tmp_path / f"{i}.zip", mutate(rng, good))
        try:
            for _image_id, image, label in dsb2018_readers.read_train_zip(path):
                assert image.shape[:2] == label.shape and image.dtype == np.uint8
        except Dsb2018Error as err:
            assert str(path) in str(err), (i, str(err))
            refused += 1
        except Exception as err:
            pytest.fail(f"mutant {i}: raw {type(err).__name__}: {err}")
    assert refused > 100


def test_rle_csv_reader_on_damaged_files(tmp_path):
    rng = np.random.default_rng(SEED + 3)
    good = b"ImageId,EncodedPixels\na1,1 3 10 2\na1,20 4\nb2,5 1\n"
    assert dsb2018_readers.read_rle_csv(_write(tmp_path / "g.csv", good)) == {
        "a1": ["1 3 10 2", "20 4"],
        "b2": ["5 1"],
    }
    for i in range(300):
        path = _write(tmp_path / f"{i}.csv", mutate(rng, good))
        try:
            rows = dsb2018_readers.read_rle_csv(path)
        except Dsb2018Error as err:
            assert str(err).startswith(f"{path}: "), (i, str(err))
            continue
        except Exception as err:
            pytest.fail(f"mutant {i}: raw {type(err).__name__}: {err}")
        assert all(isinstance(r, str) for rows_of in rows.values() for r in rows_of)


# Tokens an RLE row may wrongly hold: signs, exponents, separators, non-ASCII digits, huge.
BAD_TOKENS = ["-1", "0", "+2", "1e3", "0x10", "1_0", "1.5", "٣", "²", "𝟙", "nan", "\x00", "9" * 30]


def _mutate_rle(rng: np.random.Generator, good: str) -> str:
    tokens = good.split()
    kind = rng.integers(5)
    if kind == 0:  # a token replaced by a bad one
        tokens[rng.integers(len(tokens))] = str(rng.choice(BAD_TOKENS))
    elif kind == 1:  # a number changed (maybe out of range, overlapping, unsorted)
        tokens[rng.integers(len(tokens))] = str(rng.integers(0, 200))
    elif kind == 2:  # a token dropped or repeated
        k = rng.integers(len(tokens))
        tokens = tokens[:k] + tokens[k + 1 :] if rng.random() < 0.5 else tokens + [tokens[k]]
    elif kind == 3:  # a character inserted
        text = " ".join(tokens)
        at = rng.integers(len(text) + 1)
        return text[:at] + chr(int(rng.integers(0, 0x3000))) + text[at:]
    else:  # printable noise
        return "".join(chr(c) for c in rng.integers(32, 127, size=rng.integers(0, 20)))
    return " ".join(tokens)


def test_rle_parser_on_mutated_rows():
    rng = np.random.default_rng(SEED + 4)
    shape = (10, 12)  # 120 pixels
    good = ["1 3 10 2", "20 4 40 1", "100 21"]
    np.testing.assert_array_equal(
        np.bincount(rle.labels_from_rle(good, shape).ravel()), [120 - 31, 5, 5, 21]
    )
    refused = 0
    for i in range(2000):
        rows = list(good)
        rows[rng.integers(len(rows))] = _mutate_rle(rng, rows[i % len(rows)])
        try:
            label = rle.labels_from_rle(rows, shape)
        except rle.RleError as err:
            assert str(err).startswith("RLE row"), (i, rows, str(err))
            refused += 1
            continue
        except Exception as err:
            pytest.fail(f"mutant {i} {rows!r}: raw {type(err).__name__}: {err}")
        assert label.shape == shape and label.dtype == np.int32
        assert 0 <= label.min() and label.max() <= len(rows)
        for k, row in enumerate(rows):  # each row paints exactly the pixels it lists
            pairs = np.array(row.split(), np.int64).reshape(-1, 2)
            assert (label == k + 1).sum() == pairs[:, 1].sum(), (i, rows)
    assert refused > 500
