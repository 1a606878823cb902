"""Instance decoding on synthetic discs: splitting, cleaning, labelling."""

import numpy as np
import pytest
from scipy import ndimage

from nucjax import metrics, postprocess

EVAL = dict(foreground_threshold=0.5, min_size=10, fill_holes=True)


def _touching_discs(shape=(64, 80), centres=((32, 28), (32, 50)), radius=13):
    """Two overlapping discs; each pixel goes to the nearer centre. (H, W) int32 labels."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dist = np.stack([np.hypot(yy - cy, xx - cx) for cy, cx in centres])
    label = np.where(dist.min(0) <= radius, dist.argmin(0) + 1, 0)
    return label.astype(np.int32)


def _three_class(label, border_width=2, blur=1.0):
    """Idealised network output for a label image: interior = eroded nuclei, border = rest."""
    interior = np.zeros(label.shape, bool)
    for i in range(1, label.max() + 1):
        interior |= ndimage.binary_erosion(label == i, iterations=border_width)
    border = (label > 0) & ~interior
    probs = np.stack([label == 0, interior, border], -1).astype(np.float32)
    probs = ndimage.gaussian_filter(probs, (blur, blur, 0))
    return probs / probs.sum(-1, keepdims=True)


def _binary(label, blur=1.0):
    return ndimage.gaussian_filter((label > 0).astype(np.float32), blur)


def _foreground(kind, label):
    """The foreground probability map _decode hands the decoder for `label`."""
    return 1.0 - _three_class(label)[..., 0] if kind == "three_class" else _binary(label)


def _check_labelling(instances, foreground_prob):
    label = instances.label
    assert label.shape == foreground_prob.shape and label.dtype == np.int32
    n = int(label.max())
    np.testing.assert_array_equal(np.unique(label), np.arange(n + 1))  # sequential 0..N
    assert instances.scores.shape == (n,) and instances.scores.dtype == np.float32
    # A nucleus's score is the mean foreground probability over its own pixels.
    want = ndimage.mean(foreground_prob, label, np.arange(1, n + 1))
    np.testing.assert_allclose(instances.scores, want, rtol=1e-5)


def _decode(kind, label, **overrides):
    args = {**EVAL, **overrides}
    if kind == "three_class":
        return postprocess.instances_from_three_class(
            _three_class(label), seed_threshold=0.5, **args
        )
    return postprocess.instances_from_binary(_binary(label), seed_depth=2.0, **args)


@pytest.mark.parametrize("kind", ["three_class", "binary"])
def test_touching_discs_split_into_two(kind):
    truth = _touching_discs()
    # The discs touch along a 14-pixel-wide contact: one connected foreground component.
    assert ndimage.label(truth > 0)[1] == 1
    instances = _decode(kind, truth)
    _check_labelling(instances, _foreground(kind, truth))
    assert instances.label.max() == 2
    iou = metrics.iou_matrix(truth, instances.label)
    assert np.all(iou.max(1) > 0.8), iou


@pytest.mark.parametrize("kind", ["three_class", "binary"])
def test_small_objects_removed(kind):
    truth = _touching_discs()
    truth[2:5, 2:5] = 3  # 9 px
    assert _decode(kind, truth, min_size=10).label.max() == 2
    assert _decode(kind, truth, min_size=5).label.max() == 3


@pytest.mark.parametrize("kind", ["three_class", "binary"])
def test_holes_filled(kind):
    truth = _touching_discs(centres=((32, 40),), radius=14)
    yy, xx = np.mgrid[:64, :80]
    holed = np.where(np.hypot(yy - 32, xx - 40) <= 3, 0, truth)
    filled = _decode(kind, holed, fill_holes=True).label
    assert filled.max() == 1 and np.all(filled[30:35, 38:43] == 1)
    unfilled = _decode(kind, holed, fill_holes=False).label
    assert unfilled[32, 40] == 0  # (binary: the ring's many distance peaks split it too)
    if kind == "three_class":
        assert unfilled.max() == 1


def test_fill_instance_holes_never_merges_neighbours():
    label = np.zeros((9, 9), np.int32)
    label[1:8, 1:8] = 1
    label[3:6, 3:6] = 0  # a hole inside nucleus 1 alone: filled with 1
    ring = np.zeros((9, 9), np.int32)
    ring[1:8, 1:8] = 1
    ring[1:8, 4:8] = 2
    ring[3:6, 3:6] = 0  # a hole shared by nuclei 1 and 2: left alone
    np.testing.assert_array_equal(
        postprocess.fill_instance_holes(label), np.pad(np.ones((7, 7)), 1)
    )
    np.testing.assert_array_equal(postprocess.fill_instance_holes(ring), ring)
    # A nucleus inside another's hole is kept, and the gap around it is not painted over.
    nested = label.copy()
    nested[4, 4] = 2
    np.testing.assert_array_equal(postprocess.fill_instance_holes(nested), nested)


def test_clean_instances_relabels_sequentially():
    label = np.zeros((10, 10), np.int32)
    label[0:4, 0:4] = 7  # 16 px
    label[6:8, 6:8] = 3  # 4 px: too small
    label[5:10, 0:3] = 12  # 15 px
    out = postprocess.clean_instances(label, min_size=5, fill_holes=True)
    expected = np.zeros_like(label)
    expected[0:4, 0:4] = 1
    expected[5:10, 0:3] = 2
    np.testing.assert_array_equal(out, expected)


def test_seedless_foreground_kept_and_empty_input():
    # A small nucleus predicted as border only (no interior seed) is still a nucleus.
    probs = np.zeros((20, 20, 3), np.float32)
    probs[..., 0] = 1
    probs[5:10, 5:10] = (0.1, 0.2, 0.7)
    inst = postprocess.instances_from_three_class(probs, seed_threshold=0.5, **EVAL)
    assert inst.label.max() == 1 and inst.scores == pytest.approx([0.9])
    empty = postprocess.instances_from_binary(
        np.zeros((8, 8)), foreground_threshold=0.5, seed_depth=2.0, min_size=1, fill_holes=True
    )
    assert empty.label.max() == 0 and empty.scores.shape == (0,)


def _crowded_discs(rng, size=128, count=14):
    """Random discs that may touch (overlap up to 3 px, split by nearest centre), as labels."""
    discs = []
    while len(discs) < count:
        cy, cx, r = *rng.uniform(12, size - 12, 2), rng.uniform(6, 10)
        if all(np.hypot(cy - y, cx - x) >= r + s - 3 for y, x, s in discs):
            discs.append((cy, cx, r))
    yy, xx = np.mgrid[:size, :size]
    dist = np.stack([np.hypot(yy - y, xx - x) - r for y, x, r in discs])
    return np.where(dist.min(0) <= 0, dist.argmin(0) + 1, 0).astype(np.int32)


def test_crowded_random_discs_decode_well():
    truth = _crowded_discs(np.random.default_rng(0))
    for kind in ("three_class", "binary"):
        inst = _decode(kind, truth)
        _check_labelling(inst, _foreground(kind, truth))
        result = metrics.evaluate_instances([truth], [inst.label])
        assert result["f1@0.50"] > 0.9 and result["dsb_score"] > 0.7, (kind, result)


def test_elongated_nucleus_is_one_instance():
    """A 60 x 12 px nucleus has a flat distance ridge; isolated peaks along it would cut it
    into stripes (what peak_local_max with a small min_distance did on real U-Net outputs)."""
    truth = np.zeros((40, 90), np.int32)
    truth[14:26, 15:75] = 1
    yy, xx = np.mgrid[:40, :90]
    truth[((yy - 20) ** 2 + (xx - 15) ** 2 <= 36) | ((yy - 20) ** 2 + (xx - 75) ** 2 <= 36)] = 1
    instances = _decode("binary", truth)
    assert instances.label.max() == 1
    assert metrics.iou_matrix(truth, instances.label)[0, 0] > 0.95


@pytest.mark.parametrize("kind", ["three_class", "binary"])
def test_only_small_holes_are_filled(kind):
    """A 12 px hole inside a nucleus is filled; ~1,200 px of background enclosed by a ring of
    foreground (crowded tissue) is not: filling it painted whole regions as nucleus."""
    yy, xx = np.mgrid[:100, :100]
    r2 = (yy - 50) ** 2 + (xx - 50) ** 2
    truth = ((r2 <= 30**2) & (r2 > 20**2)).astype(np.int32)  # a ring around ~1,250 px
    truth[(yy - 10) ** 2 + (xx - 12) ** 2 <= 64] = 2  # a small disc ...
    truth[(yy - 10) ** 2 + (xx - 12) ** 2 <= 2] = 0  # ... with a 5 px hole
    instances = _decode(kind, truth)
    assert instances.label[50, 50] == 0  # the enclosed background stays background
    assert instances.label[10, 12] > 0  # the small hole is filled


def _edge_touching_crowd():
    """Crowded random discs with some cut by every image edge (a 128 px crop of 160 px)."""
    return _crowded_discs(np.random.default_rng(3), size=160, count=40)[16:144, :128]


def test_h_maxima_by_component_equals_the_whole_image_h_maxima():
    """Also for components at the image edge, where the distance rises to the edge: without
    the box's background margin such a component's h_maxima would find no peak."""
    from skimage import morphology

    mask = _edge_touching_crowd() > 0
    mask[:, 126:] = True  # a 2 px strip along the right edge: distance 1..2 against the edge
    mask[:, 124:126] = False
    distance = ndimage.distance_transform_edt(mask)
    components, _ = ndimage.label(mask, np.ones((3, 3)))
    for h in (1.0, 2.0, 3.5):
        want = morphology.h_maxima(distance, h).astype(bool) & mask
        got = postprocess.h_maxima_by_component(distance, components, h)
        assert want.any() and (h > 2 or want[:, 127].all())
        np.testing.assert_array_equal(got, want)


def test_watershed_by_component_equals_the_whole_image_flood(monkeypatch):
    """Equal on these untied values (see watershed_in_mask for ties)."""
    truth = _edge_touching_crowd()
    probs = _three_class(truth, blur=1.5)
    args = dict(seed_threshold=0.5, **EVAL)
    whole = postprocess.instances_from_three_class(probs, **args)
    monkeypatch.setattr(postprocess, "WATERSHED_BY_COMPONENT_PIXELS", 0)
    by_component = postprocess.instances_from_three_class(probs, **args)
    assert whole.label.max() > 20
    np.testing.assert_array_equal(by_component.label, whole.label)
    np.testing.assert_array_equal(by_component.scores, whole.scores)
    binary = postprocess.instances_from_binary(_binary(truth), seed_depth=2.0, **EVAL)
    monkeypatch.undo()
    np.testing.assert_array_equal(
        binary.label,
        postprocess.instances_from_binary(_binary(truth), seed_depth=2.0, **EVAL).label,
    )


def test_shrunk_nuclei_keeps_pixels_whose_window_holds_only_their_own_id():
    label = np.zeros((7, 9), np.int32)
    label[1:6, 1:4] = 1  # 5 x 3
    label[1:6, 4:8] = 2  # 5 x 4, touching 1 along a column
    got = postprocess.shrunk_nuclei(label, 1)
    want = np.zeros_like(label)
    want[2:5, 2] = 1  # column 3 touches id 2, column 1 touches background
    want[2:5, 5:7] = 2
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(postprocess.shrunk_nuclei(label, 0), label)
    assert not postprocess.shrunk_nuclei(label, 2).any()  # 3 px wide: nothing survives 5 x 5


def test_seeded_decoding_takes_its_nuclei_from_the_seeds_and_its_edges_from_the_map():
    truth = _touching_discs()
    probs = _three_class(truth)
    # A stray blob the seed model found nothing in: the map alone would make it a nucleus.
    stray = np.zeros(truth.shape, bool)
    stray[2:8, 2:8] = True
    probs[stray] = (0.0, 1.0, 0.0)
    # Seeds: the two nuclei, each a smaller, shifted disc (a detector's rough masks).
    seeds = np.zeros_like(truth)
    yy, xx = np.mgrid[: truth.shape[0], : truth.shape[1]]
    seeds[np.hypot(yy - 30, xx - 27) <= 9] = 1
    seeds[np.hypot(yy - 33, xx - 52) <= 9] = 2
    got = postprocess.instances_from_three_class_seeded(probs, seeds, seed_erosion=2, **EVAL)
    _check_labelling(got, 1.0 - probs[..., 0])
    assert got.label.max() == 2 and not got.label[stray].any()
    # The nuclei have the map's edges, not the seeds' (alone they score far lower).
    assert metrics.evaluate_instances([truth], [got.label])["dsb_score"] > 0.9
    assert metrics.evaluate_instances([truth], [seeds])["dsb_score"] < 0.3
    # One seed over both nuclei: one nucleus, whatever the map's border says.
    merged = postprocess.instances_from_three_class_seeded(
        probs, (truth > 0).astype(np.int32), seed_erosion=2, **EVAL
    )
    assert merged.label.max() == 1
    with pytest.raises(ValueError, match="seeds of shape"):
        postprocess.instances_from_three_class_seeded(probs, seeds[:10], seed_erosion=2, **EVAL)


def test_seed_foreground_threshold_keeps_what_the_map_sees_faintly_within_a_seed():
    truth = _touching_discs()
    probs = _three_class(truth)
    seeds = np.where(ndimage.binary_erosion(truth > 0, iterations=4), truth, 0)
    # A third nucleus the map sees faintly (foreground 0.3 on a 9 x 9 square) and a seed
    # covers, and a fourth seed where the map sees next to nothing (0.01).
    faint = np.zeros(truth.shape, bool)
    faint[3:12, 3:12] = True
    probs[faint] = (0.7, 0.2, 0.1)
    seeds[faint] = 3
    nothing = np.zeros(truth.shape, bool)
    nothing[50:60, 3:12] = True
    probs[nothing] = (0.99, 0.005, 0.005)
    seeds[nothing] = 4
    assert not truth[faint | nothing].any()
    plain = postprocess.instances_from_three_class_seeded(probs, seeds, seed_erosion=2, **EVAL)
    low = postprocess.instances_from_three_class_seeded(
        probs, seeds, seed_erosion=2, seed_foreground_threshold=0.25, **EVAL
    )
    union = postprocess.instances_from_three_class_seeded(
        probs, seeds, seed_erosion=2, seed_foreground_threshold=0.0, **EVAL
    )
    assert plain.label.max() == 2 and not plain.label[faint | nothing].any()
    assert low.label.max() == 3 and not low.label[nothing].any()
    np.testing.assert_array_equal(low.label == low.label[7, 7], faint)
    assert union.label.max() == 4
    np.testing.assert_array_equal(union.label == union.label[55, 7], nothing)
    # The nuclei the map sees clearly keep the map's edges, whatever the threshold.
    for got in (low, union):
        np.testing.assert_array_equal(np.where(faint | nothing, 0, got.label) > 0, plain.label > 0)
    # Above foreground_threshold it changes nothing.
    high = postprocess.instances_from_three_class_seeded(
        probs, seeds, seed_erosion=2, seed_foreground_threshold=0.9, **EVAL
    )
    np.testing.assert_array_equal(high.label, plain.label)


def test_confident_drops_the_nuclei_scored_below_the_floor_and_keeps_the_others_ids():
    label = np.array([[0, 1, 1], [2, 2, 0], [3, 0, 3]], np.int32)
    nuclei = postprocess.Instances(label, np.array([0.9, 0.5, 0.6], np.float32))
    np.testing.assert_array_equal(
        postprocess.confident(nuclei, 0.6), [[0, 1, 1], [0, 0, 0], [3, 0, 3]]
    )
    np.testing.assert_array_equal(postprocess.confident(nuclei, 0.0), label)
    assert not postprocess.confident(nuclei, 0.95).any()


def _square_views(placements, shape=(20, 20)):
    """placements: per view, [(y, x, score)] of 4 x 4 squares -> K Instances."""
    views = []
    for squares in placements:
        label = np.zeros(shape, np.int32)
        for i, (y, x, _) in enumerate(squares):
            label[y : y + 4, x : x + 4] = i + 1
        views.append(postprocess.Instances(label, np.array([s for *_, s in squares], np.float32)))
    return views


def test_fuse_views_keeps_the_nuclei_enough_views_agree_on_drawn_where_half_their_members_lie():
    # A in all four views (the fourth shifted one column: IoU 12/20 = 0.6 joins), C in three,
    # B in two, D in one.
    a, b, c, d = (2, 2), (10, 10), (10, 2), (15, 15)
    views = _square_views(
        [
            [(*a, 0.9), (*b, 0.95)],
            [(*a, 0.8), (*b, 0.9), (*c, 0.7)],
            [(*a, 0.9), (*c, 0.7), (*d, 0.99)],
            [(2, 3, 0.6), (*c, 0.4)],
        ]
    )
    got = postprocess.fuse_views(views, min_votes=3)
    want = np.zeros((20, 20), np.int32)
    want[2:6, 2:6] = 1  # columns 2-5 hold >= 2 of A's 4 members; column 6 only the shifted one
    want[10:14, 2:6] = 2
    np.testing.assert_array_equal(got.label, want)
    np.testing.assert_allclose(got.scores, [(0.9 + 0.8 + 0.9 + 0.6) / 4, (0.7 + 0.7 + 0.4) / 4])
    every = postprocess.fuse_views(views, min_votes=1)
    assert every.label.max() == 4
    np.testing.assert_allclose(np.sort(every.scores), np.sort([0.8, 0.45, 0.4625, 0.2475]))
    # Below the IoU threshold a shifted nucleus starts a cluster of its own.
    apart = postprocess.fuse_views(_square_views([[(2, 2, 0.9)], [(2, 4, 0.9)]]), min_votes=2)
    assert apart.label.max() == 0
