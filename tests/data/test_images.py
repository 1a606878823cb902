"""Image helpers: to_rgb on every supported layout and type, modality_of on drawn images."""

import numpy as np
import pytest

from nucjax.data import images


def test_to_rgb():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for image in (grey, grey[..., None]):
        got = images.to_rgb(image)
        assert got.shape == (3, 4, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, np.stack([grey] * 3, -1))
    rgba = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(images.to_rgb(rgba), rgba[..., :3])
    deep = np.array([[1000, 1500], [2000, 3000]], np.uint16)
    np.testing.assert_array_equal(images.to_rgb(deep)[..., 1], [[0, 64], [128, 255]])
    np.testing.assert_array_equal(images.to_rgb(np.full((2, 2), 5000, np.uint16)), 0)
    with pytest.raises(ValueError, match="shape"):
        images.to_rgb(np.zeros((2, 2, 5), np.uint8))


# --------------------------------------------------------------------------------- modality


def blobs(background, nucleus, shape=(64, 64)) -> np.ndarray:
    image = np.empty((*shape, 3), np.uint8)
    image[:] = background
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy, cx in [(16, 16), (16, 48), (48, 16), (48, 48), (32, 32)]:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = nucleus
    return image


@pytest.mark.parametrize(
    "image, modality",
    [
        (blobs(10, 200), "fluorescence"),  # grey, dark background
        (blobs((5, 20, 5), (40, 220, 60)), "fluorescence"),  # coloured but dark
        (blobs(230, 90), "brightfield"),  # grey, bright
        (blobs((225, 160, 205), (120, 60, 160)), "histology"),  # pink eosin, purple nuclei
        (blobs((215, 215, 222), (130, 90, 190)), "histology"),  # white, purple nuclei
        (blobs((235, 235, 205), (120, 80, 170)), "brightfield"),  # yellow, purple nuclei
        (blobs((210, 200, 120), (120, 110, 60)), "brightfield"),  # yellow-brown stain
    ],
)
def test_modality(image, modality):
    assert images.modality_of(image) == modality
    assert images.modality_of(np.concatenate([image, np.full_like(image[..., :1], 7)], -1)) == (
        modality
    )  # alpha ignored


def test_modality_of_grey_2d():
    assert images.modality_of(blobs(10, 200)[..., 0]) == "fluorescence"
    assert images.modality_of(blobs(230, 90)[..., 0]) == "brightfield"


def test_input_view_grey_inverted_by_background():
    bright = np.full((4, 4, 3), 200, np.uint8)
    bright[1, 1] = (30, 60, 90)  # a dark stained nucleus on a bright background
    got = images.input_view(bright, "grey_inverted")
    assert got.shape == (4, 4, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 0], got[..., 2])
    assert got[0, 0, 0] == 55 and got[1, 1, 0] == 195  # 255 - 200, 255 - mean(30, 60, 90)
    dark = np.zeros((4, 4, 3), np.uint8)
    dark[2, 2] = (250, 200, 0)  # fluorescence stays as it is, averaged over channels
    got = images.input_view(dark, "grey_inverted")
    assert got[2, 2, 1] == 150 and got[0, 0, 1] == 0
    assert images.input_view(bright, "rgb") is bright
    with pytest.raises(ValueError, match="input_view='hsv'"):
        images.input_view(bright, "hsv")


def test_input_view_inverted_keeps_colour_and_equals_grey_inverted_on_grey():
    bright = np.full((4, 4, 3), 200, np.uint8)
    bright[1, 1] = (30, 60, 90)
    got = images.input_view(bright, "inverted")
    np.testing.assert_array_equal(got[1, 1], (225, 195, 165))  # each channel 255 - it
    np.testing.assert_array_equal(got[0, 0], (55, 55, 55))
    dark = np.zeros((4, 4, 3), np.uint8)
    dark[2, 2] = (250, 200, 0)
    np.testing.assert_array_equal(images.input_view(dark, "inverted"), dark)
    rng = np.random.default_rng(0)
    for level in (20, 230):  # a dark and a bright grey image: the two views agree exactly
        grey = np.clip(rng.normal(level, 30, (8, 8)), 0, 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        np.testing.assert_array_equal(
            images.input_view(rgb, "inverted"), images.input_view(rgb, "grey_inverted")
        )


def test_normalize_image():
    rng = np.random.default_rng(0)
    flat = images.normalize_image(np.full((5, 6, 3), 7, np.uint8))
    np.testing.assert_array_equal(flat, 0.0)  # the floor on std keeps it finite
    sparse = (rng.random((9, 8, 3)) < 0.01).astype(np.uint8) * 200
    x = sparse.astype(np.float64)
    want = (x - x.mean()) / max(x.std(), 1.0)
    np.testing.assert_allclose(images.normalize_image(sparse), want, atol=1e-6)
    image = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    got = images.normalize_image(image)
    assert abs(got.mean()) < 1e-5 and abs(got.std() - 1) < 1e-5
    np.testing.assert_array_equal(images.normalize_image(np.full((2, 2, 3), 9)), 0.0)


def test_convert_view_inverted_to_grey_inverted_matches_the_direct_view():
    rng = np.random.default_rng(1)
    for base in (40, 210):  # dark fluorescence-like and bright H&E-like colour images
        rgb = np.clip(rng.normal(base, 25, (32, 40, 3)), 0, 255).astype(np.uint8)
        rgb[8:16, 8:20] = (120, 40, 160)  # a purple nucleus
        direct = images.network_input(rgb, "grey_inverted")
        got = images.convert_view(
            images.network_input(rgb, "inverted"), "inverted", "grey_inverted"
        )
        assert got.shape == direct.shape and got.dtype == np.float32
        grey_std = rgb.astype(np.float64).mean(axis=-1).std()
        # grey_inverted rounds the mean to a grey level first: at most 0.5 level apart
        np.testing.assert_allclose(got, direct, atol=0.5 / grey_std + 1e-5)
    x = images.network_input(rgb, "rgb")
    assert images.convert_view(x, "rgb", "rgb") is x
    with pytest.raises(ValueError, match="view 'rgb' cannot be turned into view 'grey_inverted'"):
        images.convert_view(x, "rgb", "grey_inverted")
