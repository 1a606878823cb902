"""image_io: users' image files read as arrays (16-bit, channel-first TIFF, RGBA, the
nuclear channel of several) and the entries of input folders (broken links, subfolders and
hidden files)."""

import os
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucjax import image_io
from nucjax.data import synthetic


def nuclei_image(shape, seed):
    """(H, W, 3) uint8 grey synthetic fluorescence nuclei."""
    rng = np.random.default_rng(seed)
    return synthetic.synthetic_example(rng, shape, False, colour="grey")[0]


def write_inputs(folder):
    """Good images of every kind, bad files, and a file that is no image at all."""
    os.makedirs(folder)
    f = lambda name: os.path.join(folder, name)  # noqa: E731
    Image.fromarray(nuclei_image((64, 64), 0)[..., 0]).save(f("grey.png"))  # 8-bit grey
    Image.fromarray(nuclei_image((70, 80), 1)).save(f("colour.jpg"), quality=95)
    rgba = np.concatenate([nuclei_image((48, 40), 2), np.full((48, 40, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba).save(f("rgba.png"))
    # 16-bit grey larger than the 64 px tile in both directions: tiled.
    tifffile.imwrite(f("deep.tif"), nuclei_image((150, 97), 3)[..., 0].astype(np.uint16) * 257)
    planar = np.moveaxis(nuclei_image((40, 50), 4), -1, 0)  # (3, H, W), as microscopes write
    tifffile.imwrite(f("planar.tiff"), planar, photometric="rgb", planarconfig="separate")
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(f("flat.png"))  # no nuclei
    with open(f("text.png"), "w") as fh:
        fh.write("this is not a PNG\n")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(f("dot.png"))
    tifffile.imwrite(f("stack.tif"), np.zeros((2, 3, 16, 16), np.uint16), photometric="minisblack")
    with open(f("notes.txt"), "w") as fh:
        fh.write("ignored\n")


def links_and_subfolders(folder, image):
    """`folder` holding a copy of `image` (grey.png), a subfolder with another, a broken
    symbolic link (to gone.png beside the folder) and a hidden file."""
    (folder / "more").mkdir(parents=True)
    shutil.copy(image, folder / "grey.png")
    shutil.copy(image, folder / "more" / "deeper.png")
    os.symlink(folder.parent / "gone.png", folder / "link.png")
    (folder / ".hidden.png").write_bytes(b"")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A folder whose in/ holds write_inputs' files."""
    root = tmp_path_factory.mktemp("image_io")
    write_inputs(str(root / "in"))
    return root


def test_16_bit_and_channel_first_inputs_read_as_images(root):
    deep = image_io.read_image(str(root / "in" / "deep.tif"))
    assert deep.dtype == np.uint16 and deep.shape == (150, 97)
    assert image_io.read_image(str(root / "in" / "planar.tiff")).shape == (40, 50, 3)
    assert image_io.read_image(str(root / "in" / "rgba.png")).shape == (48, 40, 4)


def test_broken_links_and_subfolders_are_returned_with_reasons(tmp_path, root):
    folder = tmp_path / "in"
    links_and_subfolders(folder, root / "in" / "grey.png")
    files, ignored, unusable = image_io.gather_inputs([str(folder)])
    assert (files, ignored) == ([str(folder / "grey.png")], [])
    assert [(os.path.basename(u["file"]), u["reason"].split(":")[0]) for u in unusable] == [
        ("link.png", "link.png"),
        ("more", "more"),
    ]
    assert "broken symbolic link" in unusable[0]["reason"] and "gone.png" in unusable[0]["reason"]
    assert "not searched recursively" in unusable[1]["reason"]
    with pytest.raises(FileNotFoundError, match="link.png is a broken symbolic link"):
        image_io.gather_inputs([str(folder / "link.png")])


def test_channel_picks_one_and_leaves_one_channel_images_as_they_are(tmp_path):
    nuclei = nuclei_image((40, 48), 20)[..., 0].astype(np.uint16) * 257
    noise = np.random.default_rng(0).integers(0, 65535, nuclei.shape, dtype=np.uint16)
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.stack([noise, nuclei]), imagej=True, metadata={"axes": "CYX"})
    np.testing.assert_array_equal(image_io.read_planes(str(path), channel=1).pixels[0], nuclei)
    with pytest.raises(image_io.UnsupportedImageError, match="channels 0..1"):
        image_io.read_planes(str(path), channel=2)
    tifffile.imwrite(tmp_path / "grey.tif", nuclei)
    grey = image_io.read_planes(str(tmp_path / "grey.tif"), channel=1)  # one channel
    np.testing.assert_array_equal(grey.pixels[0], nuclei)
