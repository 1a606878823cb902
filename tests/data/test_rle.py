"""Kaggle RLE: a hand-computed example, round trips against a loop reference, bad strings."""

import numpy as np
import pytest

from nucjax.data import rle


def reference_encode(mask: np.ndarray) -> str:
    """Plain-loop encoder: column-major pixels, 1-indexed 'start length' pairs."""
    pairs, run_start = [], None
    flat = list(mask.flatten(order="F")) + [False]
    for i, on in enumerate(flat):
        if on and run_start is None:
            run_start = i
        elif not on and run_start is not None:
            pairs += [run_start + 1, i - run_start]
            run_start = None
    return " ".join(map(str, pairs))


def random_label(rng, shape=(23, 17), num=6) -> np.ndarray:
    """Instances with holes and several pieces, some ids missing, some -1 pixels."""
    label = rng.integers(0, num + 1, size=shape)
    label[rng.random(shape) < 0.3] = 0
    label[label == 3] = 0  # id 3 absent
    label[0, 0] = -1
    return label.astype(np.int32)


def test_hand_example():
    # columns top to bottom: pixels 1 2 3 | 4 5 6 | 7 8 9
    mask = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
    assert rle.rle_encode(mask) == "2 1 4 2 9 1"
    np.testing.assert_array_equal(rle.rle_decode("2 1 4 2 9 1", (3, 3)), mask)


def test_non_square_is_column_major():
    # (2, 3): pixel numbers [[1, 3, 5], [2, 4, 6]]
    np.testing.assert_array_equal(
        rle.rle_decode("2 1 4 1 6 1", (2, 3)), np.array([[0, 0, 0], [1, 1, 1]], bool)
    )


def test_empty_mask():
    assert rle.rle_encode(np.zeros((4, 5), bool)) == ""
    assert not rle.rle_decode("", (4, 5)).any()
    assert rle.labels_from_rle([], (4, 5)).shape == (4, 5)


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_against_reference(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((19, 13)) < 0.4
    text = rle.rle_encode(mask)
    assert text == reference_encode(mask)
    np.testing.assert_array_equal(rle.rle_decode(text, mask.shape), mask)


@pytest.mark.parametrize("seed", range(5))
def test_labels_round_trip(seed):
    label = random_label(np.random.default_rng(seed))
    rows = rle.label_to_rles(label)
    ids = [i for i in np.unique(label) if i > 0]
    assert rows == [reference_encode(label == i) for i in ids]
    decoded = rle.labels_from_rle(rows, label.shape)
    assert decoded.dtype == np.int32
    # ids come back renumbered 1..N in ascending order of the original ids
    expected = np.zeros_like(label)
    for new, old in enumerate(ids, start=1):
        expected[label == old] = new
    np.testing.assert_array_equal(decoded, expected)


def test_labels_from_rle_row_i_is_instance_i_plus_1():
    label = rle.labels_from_rle(["1 2", "", "9 1"], (3, 3))
    np.testing.assert_array_equal(label, [[1, 0, 0], [1, 0, 0], [0, 0, 3]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2 3", "odd number"),
        ("1 x", "'x' is not a decimal integer"),
        ("0 2", "below 1"),
        ("4 0", "length below 1"),
        ("8 3", "past the image's 9 pixels"),
        ("5 2 1 1", "unsorted or overlapping"),
        ("1 3 2 1", "unsorted or overlapping"),
    ],
)
def test_malformed_rle(text, message):
    with pytest.raises(ValueError, match=message):
        rle.rle_decode(text, (3, 3))


def test_malformed_row_is_named():
    with pytest.raises(ValueError, match="row 1"):
        rle.labels_from_rle(["1 1", "1 2 3"], (3, 3))


def test_overlapping_rows():
    with pytest.raises(ValueError, match=r"rows \[0, 2\] overlap at pixel 3"):
        rle.labels_from_rle(["1 4", "7 1", "3 1"], (3, 3))


@pytest.mark.parametrize(
    "rows, message",
    [
        # int() reads Unicode digits and underscores; the CSV format has neither.
        (["1 1", "\u00b2 1"], r"row 1: '\u00b2' is not a decimal integer"),
        (["1 1", "2 \u0663"], r"row 1: '\u0663' is not a decimal integer"),
        (["1_0 1"], "row 0: '1_0' is not a decimal integer"),
        (["1 1_0"], "row 0: '1_0' is not a decimal integer"),
        (["+1 1"], "row 0: '\\+1' is not a decimal integer"),
        (["-1 1"], "row 0: '-1' is not a decimal integer"),
        # Out of the image: named before numpy (int64 overflow) or indexing sees them.
        (["1 1", "10 1"], "row 1: start 10 exceeds the image's 9 pixels"),
        (["1 10"], "row 0: length 10 exceeds the image's 9 pixels"),
        (["99999999999999999999999 1"], "row 0: start 99999999999999999999999 exceeds"),
        (["1 " + "9" * 5000], r"row 0: length 9{20}\.\.\. exceeds the image's 9 pixels"),
    ],
)
def test_tokens_must_be_ascii_integers_within_the_image(rows, message):
    with pytest.raises(ValueError, match=message):
        rle.labels_from_rle(rows, (3, 3))


def test_leading_zeros_are_still_numbers():
    np.testing.assert_array_equal(
        rle.labels_from_rle(["0" * 5000 + "2 01"], (3, 3)), [[0, 0, 0], [1, 0, 0], [0, 0, 0]]
    )
