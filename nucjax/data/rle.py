"""Kaggle run-length encoding of masks, as the DSB 2018 CSV files write it.

A string "start length start length ..." lists runs of foreground pixels. Pixels are numbered
top-to-bottom, then left-to-right (column-major, the transpose of numpy's order), starting at
1. Runs are sorted and never overlap; the empty string is an empty mask.

Everything here is vectorised over runs: no Python loop visits pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class RleError(ValueError):
    """A malformed or inconsistent RLE string; the message names the row and the run."""


def _shown(token: str) -> str:
    return token if len(token) <= 24 else token[:20] + "..."


def _row_numbers(tokens: list[str], i: int, size: int) -> list[int]:
    """One row's tokens -> ints, each an ASCII decimal integer in 0..size.

    int() alone would take '1_0' as 10 and Unicode digits such as '²' or '٣', and a huge
    value would overflow int64 in numpy later; so digits and magnitude are checked here.
    """
    if not tokens:
        return []
    text = "".join(tokens)
    if not (text.isascii() and text.isdigit()):
        bad = next(t for t in tokens if not (t.isascii() and t.isdigit()))
        raise RleError(f"RLE row {i}: {_shown(bad)!r} is not a decimal integer (digits 0-9 only)")
    longest = len(str(size))
    if all(len(t) <= longest for t in tokens):  # the common case: no int() of a huge string
        numbers = list(map(int, tokens))
        if max(numbers, default=0) <= size:
            return numbers
    digits = [t.lstrip("0") or "0" for t in tokens]  # int() refuses over 4300 digits
    too_big = [k for k, d in enumerate(digits) if len(d) > longest or int(d) > size]
    if not too_big:  # only leading zeros made a token long
        return list(map(int, digits))
    k = too_big[0]
    what = "start" if k % 2 == 0 else "length"
    raise RleError(f"RLE row {i}: {what} {_shown(tokens[k])} exceeds the image's {size} pixels")


def _runs(rows: Sequence[str], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated runs of RLE rows: (starts, ends, row index), 0-based, end exclusive, int64."""
    numbers, pairs_per_row = [], []
    for i, rle in enumerate(rows):
        tokens = rle.split()
        if len(tokens) % 2:
            raise RleError(f"RLE row {i} has an odd number of values ({len(tokens)})")
        numbers.extend(_row_numbers(tokens, i, size))
        pairs_per_row.append(len(tokens) // 2)
    numbers = np.array(numbers, dtype=np.int64).reshape(-1, 2)
    starts, lengths = numbers[:, 0] - 1, numbers[:, 1]
    row = np.repeat(np.arange(len(pairs_per_row)), pairs_per_row)
    ends = starts + lengths

    def fail(bad: np.ndarray, what: str):
        k = int(np.flatnonzero(bad)[0])
        raise RleError(f"RLE row {row[k]}: run '{starts[k] + 1} {lengths[k]}' {what}")

    if (starts < 0).any():
        fail(starts < 0, "starts below 1 (starts are 1-indexed)")
    if (lengths < 1).any():
        fail(lengths < 1, "has a length below 1")
    if (ends > size).any():
        fail(ends > size, f"ends past the image's {size} pixels")
    unsorted = np.append(False, (starts[1:] < ends[:-1]) & (row[1:] == row[:-1]))
    if unsorted.any():
        fail(unsorted, "starts before the previous run of its row ends (unsorted or overlapping)")
    return starts, ends, row


def _column_major_to_image(flat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    return np.ascontiguousarray(flat.reshape(width, height).T)


def rle_decode(rle: str, shape: Sequence[int]) -> np.ndarray:
    """One RLE string -> mask (H, W) bool. shape: (H, W)."""
    return labels_from_rle([rle], shape) > 0


def rle_encode(mask: np.ndarray) -> str:
    """mask: (H, W) bool (or 0/non-zero) -> RLE string; "" for an empty mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D mask, got shape {mask.shape}")
    flat = np.concatenate([[False], mask.T.ravel() != 0, [False]])
    edges = np.flatnonzero(flat[1:] != flat[:-1])  # run starts and ends, 0-based
    starts, ends = edges[0::2], edges[1::2]
    pairs = np.stack([starts + 1, ends - starts], axis=1).ravel()
    return " ".join(map(str, pairs.tolist()))


def labels_from_rle(rows: Sequence[str], shape: Sequence[int]) -> np.ndarray:
    """RLE strings, one per nucleus -> label (H, W) int32; row i paints instance i + 1.

    An empty row paints nothing (its id is then absent). Raises RleError if a row is
    malformed (the message names the row) or if two rows claim the same pixel.
    """
    height, width = (int(n) for n in shape)
    starts, ends, row = _runs(rows, height * width)
    ids = row + 1
    # Runs sorted by start overlap somewhere only if some neighbouring pair does.
    order = np.argsort(starts, kind="stable")
    starts, ends, ids = starts[order], ends[order], ids[order]
    clash = np.flatnonzero(starts[1:] < ends[:-1])
    if clash.size:
        k = int(clash[0])
        rows_there = sorted({int(ids[k]) - 1, int(ids[k + 1]) - 1})
        raise RleError(f"RLE rows {rows_there} overlap at pixel {starts[k + 1] + 1}")
    # Paint only foreground pixels: run r covers starts[r] + 0 .. lengths[r] - 1.
    lengths = ends - starts
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    flat = np.zeros(height * width, np.int32)
    flat[np.arange(offsets.size) + offsets] = np.repeat(ids, lengths)
    return _column_major_to_image(flat, (height, width))


def label_to_rles(label: np.ndarray) -> list[str]:
    """label: (H, W) int, 0 background, ids > 0 -> one RLE per id, ascending, empty ids skipped.

    Negative values (-1, "not labelled") count as background.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label_to_rles needs a 2-D label image, got shape {label.shape}")
    flat = np.concatenate([[0], np.where(label > 0, label, 0).T.ravel(), [0]])
    change = np.flatnonzero(flat[1:] != flat[:-1])  # every position where a run starts or ends
    values = flat[change + 1]
    run_starts = change[:-1]
    run_lengths = np.diff(change)
    keep = values[:-1] > 0
    run_ids, run_starts, run_lengths = values[:-1][keep], run_starts[keep], run_lengths[keep]
    order = np.argsort(run_ids, kind="stable")  # stable: runs of one id stay in pixel order
    run_ids, run_starts, run_lengths = run_ids[order], run_starts[order], run_lengths[order]
    ids, first = np.unique(run_ids, return_index=True)
    bounds = np.append(first, run_ids.size)
    pairs = np.stack([run_starts + 1, run_lengths], axis=1)
    return [
        " ".join(map(str, pairs[lo:hi].ravel().tolist()))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]
