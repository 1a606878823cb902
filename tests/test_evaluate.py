"""evaluate: whole images of a split -> every metric, as JSON and a markdown table."""

import json
import math

import numpy as np
import pytest

from nucjax import data, evaluate, metrics, postprocess
from nucjax.data.pipeline import normalize_image
from tests.test_inference import threshold_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("threshold")
    return threshold_workdir(path), str(path)


def _threshold_model_scores(config, split):
    """DSB score per image of the hand-set threshold model (tests.test_inference), in numpy.

    Its layers: batch norm (mean 0, variance 1, flax's epsilon 1e-5), sigmoid(4/3 (r + g + b)),
    five times sigmoid(8 h - 4), logit 20 h - 10 from the 3x3 output's centre tap.
    """
    assert config.data.input_view == "rgb" and config.model.target == "binary"
    scores = []
    for _, image, label in evaluate.labelled_examples(config, split):
        x = normalize_image(image).astype(np.float64) / np.sqrt(1 + 1e-5)
        h = _sigmoid(4 / 3 * x.sum(-1))
        for _ in range(5):
            h = _sigmoid(8 * h - 4)
        ev = config.eval
        predicted = postprocess.instances_from_binary(
            _sigmoid(20 * h - 10),
            foreground_threshold=ev.foreground_threshold,
            seed_depth=ev.seed_depth,
            min_size=ev.min_size,
            fill_holes=ev.fill_holes,
            max_hole_size=ev.max_hole_size,
        )
        scores.append(metrics.dsb_image_score(label, predicted.label))
    return scores


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_evaluate_writes_json_and_markdown(workdir):
    config, path = workdir
    report = evaluate.evaluate(config, path)
    m = report["metrics"]
    assert report["split"] == "validation" and report["step"] == 7
    assert report["json"].endswith("eval/validation_step7.json")
    assert m["num_images"] == len(report["images"]) == config.data.synthetic_num_images
    # The hand-set model's score, recomputed without the checkpoint, tiling or evaluate.
    want = _threshold_model_scores(config, "validation")
    assert [r["dsb_score"] for r in report["images"]] == pytest.approx(want, abs=1e-9)
    assert m["dsb_score"] == pytest.approx(np.mean(want), abs=1e-9)
    assert m["dsb_score"] > 0.1  # 0.168: it finds nuclei, the comparison is not 0 == 0
    for key, _, _ in evaluate.DEFINITIONS:
        assert math.isfinite(m[key]), key
    saved = json.load(open(report["json"]))
    assert saved["metrics"]["dsb_score"] == m["dsb_score"]
    row = saved["images"][0]
    assert {"id", "height", "width", "dsb_score", "n_true", "n_pred", "predict_s"} <= set(row)
    table = open(report["markdown"]).read()
    assert f"| {m['dsb_score']:.4f} |" in table
    assert "Keras-starter mean IoU" in table and "foreground IoU" in table
    assert "step 7" in table
    for key, _, definition in evaluate.DEFINITIONS:
        assert "|" not in definition, key  # a "|" would split the markdown cell


def test_evaluate_scores_what_it_predicted(workdir):
    """The JSON's per-image scores equal metrics on the labels of the same split."""
    config, path = workdir
    report = evaluate.evaluate(config, path, split="train")
    examples = list(evaluate.labelled_examples(config, "train"))
    assert [r["id"] for r in report["images"]] == [i for i, _, _ in examples]
    assert [r["n_true"] for r in report["images"]] == [int(lab.max()) for _, _, lab in examples]
    assert report["metrics"]["true_nuclei"] == sum(int(lab.max()) for _, _, lab in examples)
    assert report["markdown"].endswith("train_step7.md")


def test_unlabelled_split_is_a_clear_error(workdir, monkeypatch):
    config, path = workdir

    class Unlabelled:
        def as_numpy_iterator(self):
            yield {"id": b"abc", "image": np.zeros((8, 8, 3), np.uint8), "label": -np.ones((8, 8))}

    monkeypatch.setattr(data, "raw_dataset", lambda *a: Unlabelled())
    with pytest.raises(ValueError, match="split 'test' has no labels .*abc.*split:test"):
        evaluate.evaluate(config, path, split="test")
    with pytest.raises(ValueError, match="unknown split 'tset'"):
        evaluate.evaluate(config, path, split="tset")


def test_map_pixel_counts_match_the_trainer_metric():
    rng = np.random.default_rng(0)
    prob = rng.random((2, 9, 7)).astype(np.float32)
    label = rng.integers(-1, 3, (2, 9, 7)).astype(np.int32)
    sums = metrics.pixel_sums(prob, label, np.ones(2, np.float32))
    counts = [evaluate.map_pixel_counts(p, lab) for p, lab in zip(prob, label, strict=True)]
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    assert total["map_intersection"] == float(sums["foreground_iou"][0])
    assert total["map_union"] == float(sums["foreground_iou"][1])
    assert total["map_correct"] == float(sums["pixel_accuracy"][0])
    assert total["map_pixels"] == float(sums["pixel_accuracy"][1])
