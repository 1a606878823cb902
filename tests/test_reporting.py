"""Reports: TensorBoard image summaries read back from the event files, and the outline figure
they show."""

import glob
import io
import os

import numpy as np
from PIL import Image

from nucjax import figures, outputs, reporting
from nucjax.runtime import import_tensorflow


def event_images(workdir: str) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Every image summary under workdir/tensorboard: {tag: [(step, (H, W, 3) uint8), ...]}."""
    tf = import_tensorflow()
    found: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "images":
                    continue
                width, height, *pngs = tf.make_ndarray(value.tensor)
                for png in pngs:
                    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                    assert image.shape[:2] == (int(height), int(width))
                    found.setdefault(value.tag, []).append((int(event.step), image))
    return found


def test_images_written_to_tensorboard_read_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (20, 44, 3), dtype=np.uint8)
    second = rng.integers(0, 256, (9, 22, 3), dtype=np.uint8)
    writer = reporting.MetricWriter(str(tmp_path))
    writer.write(7, "eval_validation", {"dsb_score": 0.5})
    writer.write_images(7, "eval_validation/outlines", [first, second])
    writer.write_images(7, "eval_validation/none", [])
    writer.close()
    found = event_images(str(tmp_path))
    assert sorted(found) == ["eval_validation/outlines/0", "eval_validation/outlines/1"]
    (step, got), *more = found["eval_validation/outlines/0"]
    assert step == 7 and not more
    np.testing.assert_array_equal(got, first)
    np.testing.assert_array_equal(found["eval_validation/outlines/1"][0][1], second)
    # Images are for TensorBoard only: metrics.jsonl holds the scalars alone.
    assert open(tmp_path / "metrics.jsonl").read().count("\n") == 1


def test_outline_comparison_draws_truth_left_and_prediction_right():
    image = np.full((8, 10, 3), 40, np.uint8)
    truth = np.full((8, 10), -1, np.int32)  # not labelled: drawn as background
    truth[1:5, 1:5] = 1
    predicted = np.zeros((8, 10), np.int32)
    predicted[3:7, 5:9] = 2
    got = figures.outline_comparison(image, truth, predicted)
    assert got.shape == (8, 24, 3) and got.dtype == np.uint8
    outlined = (got == outputs.OUTLINE).all(-1)
    want_left = np.zeros((8, 10), bool)
    want_left[1:5, 1:5] = True
    want_left[2:4, 2:4] = False  # the inner boundary of the 4 x 4 square
    want_right = np.zeros((8, 10), bool)
    want_right[3:7, 5:9] = True
    want_right[4:6, 6:8] = False
    np.testing.assert_array_equal(outlined[:, :10], want_left)
    np.testing.assert_array_equal(outlined[:, 14:], want_right)
    np.testing.assert_array_equal(got[:, 10:14], 255)
    np.testing.assert_array_equal(got[:, :10][~want_left], 40)
