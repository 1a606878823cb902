"""Tiling geometry: tiles on the stride grid whose owned regions partition the image, the few
tile sides, and cutting and stitching as a round trip."""

import numpy as np
import pytest

from nucjax import tiling


@pytest.mark.parametrize("extent", [1, 5, 64, 65, 97, 150, 300])
def test_tile_layout_partitions_on_the_stride_grid(extent):
    stride, tile, overlap = 4, 64, 16
    padded = tiling.round_to_stride(extent, stride)
    layout = tiling.tile_layout(padded, tile, overlap, stride)
    owned = np.zeros(padded, int)
    for start, lo, hi in layout:
        assert start % stride == 0 and 0 <= start and start + min(tile, padded) <= padded
        owned[lo:hi] += 1
        # Every owned pixel is at least overlap / 2 from an edge inside the image.
        assert lo == 0 or lo - start >= overlap // 2
        assert hi == padded or start + tile - hi >= overlap // 2
    assert (owned == 1).all()


@pytest.mark.parametrize(
    ("extent", "tile", "overlap", "want"),
    [(1024, 1024, 64, 1024), (256, 1024, 64, 256), (300, 1024, 64, 384), (1, 1024, 64, 128),
     # 2048 (stride 32): 3 x 768 = 2304 px beat 3 x 1024, 4 x 640 and 5 x 512 (2560 px)
     (2048, 1024, 64, 768),
     # 1040 -> 1056: 2 x 640 = 1280 px beat one 1024 too short, 2 x 768 and 3 x 512
     (1040, 1024, 64, 640),
     (40, 64, 16, 64), (20, 64, 16, 32), (64, 64, 16, 64), (100, 64, 16, 64)],
)  # fmt: skip
def test_tile_side_covers_a_side_with_the_fewest_network_pixels(extent, tile, overlap, want):
    assert tiling.tile_side(extent, 32, tile, overlap) == want


def test_tile_sides_are_few_and_never_cost_more_than_full_tiles():
    """Every extent gets one of the 8 lengths (so few compiled shapes) and never runs more
    pixels through the network than full tiles of tile_size would."""
    stride, tile, overlap = 32, 1024, 64
    sides = set()
    for extent in range(1, 3000, 7):
        side = tiling.tile_side(extent, stride, tile, overlap)
        sides.add(side)
        padded = tiling.round_to_stride(extent, stride)
        n = len(tiling.tile_layout(max(side, padded), side, overlap, stride))
        full = len(tiling.tile_layout(max(tile, padded), tile, overlap, stride))
        assert n * side <= full * tile and (n > 1 or side >= padded)
    assert sides <= set(range(128, 1025, 128))


@pytest.mark.parametrize("size", [(1, 1), (40, 50), (150, 97), (64, 130)])
def test_stitching_the_cut_tiles_gives_back_the_padded_image(size):
    """A ramp (every pixel distinct) cut into overlapping tiles and stitched back is the image
    zero-padded to the tile grid: every pixel back at its place, whichever tile it came from."""
    h, w = size
    image = np.arange(h * w * 3, dtype=np.float32).reshape(h, w, 3) + 1
    rows, cols, shape = tiling.tile_grid(h, w, 4, 32, 8)
    tiles = tiling.cut(image, rows, cols, shape)
    assert tiles.shape == (len(rows) * len(cols), *shape, 3)
    stitched = tiling.stitch(tiles, rows, cols)
    assert stitched.shape == (rows[-1][2], cols[-1][2], 3)
    np.testing.assert_array_equal(stitched[:h, :w], image)
    assert (stitched[h:] == 0).all() and (stitched[:, w:] == 0).all()
