"""Evaluation: whole images of a split -> every metric, per modality, as JSON and markdown;
and the trainer's evaluation and --mode=evaluate are one code path with identical numbers."""

import json
import math

import numpy as np
import pytest

from configs import simple_cnn
from nucjax import data, evaluate, evaluators, metrics, postprocess, train
from nucjax.data.images import normalize_image
from tests.trained import threshold_workdir


@pytest.fixture(scope="module")
def threshold(tmp_path_factory):
    path = tmp_path_factory.mktemp("threshold")
    return threshold_workdir(path), str(path)


def test_evaluate_writes_json_and_markdown(threshold):
    config, path = threshold
    report = evaluate.evaluate(None, path)  # the workdir's saved config
    m = report["metrics"]
    assert report["split"] == "validation" and report["step"] == 7
    assert report["json"].endswith("eval/validation_step7.json")
    assert m["num_images"] == len(report["images"]) == config.data.synthetic_num_images
    for key, _, _ in evaluate.DEFINITIONS:
        assert math.isfinite(m[key]), key
    saved = json.load(open(report["json"]))
    assert saved["metrics"]["dsb_score"] == m["dsb_score"]
    row = saved["images"][0]
    assert {"id", "modality", "height", "width", "dsb_score", "n_true", "predict_s"} <= set(row)
    assert sum(v["num_images"] for v in saved["by_modality"].values()) == m["num_images"]
    table = open(report["markdown"]).read()
    assert f"| {m['dsb_score']:.4f} |" in table
    assert "Keras-starter mean IoU" in table and "By modality" in table and "step 7" in table
    for key, _, definition in evaluate.DEFINITIONS:
        assert "|" not in definition, key  # a "|" would split the markdown cell


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _threshold_model_nuclei(config, image):
    """The hand-set threshold model (tests.trained) and its post-processing, in numpy: batch
    norm (mean 0, variance 1, flax's epsilon 1e-5), sigmoid(4/3 (r + g + b)), five times
    sigmoid(8 h - 4), logit 20 h - 10 from the 3x3 output's centre tap. No checkpoint, tiling
    or evaluator code."""
    assert config.data.input_view == "rgb" and config.model.target == "binary"
    x = normalize_image(image).astype(np.float64) / np.sqrt(1 + 1e-5)
    h = _sigmoid(4 / 3 * x.sum(-1))
    for _ in range(5):
        h = _sigmoid(8 * h - 4)
    ev = config.eval
    return postprocess.instances_from_binary(
        _sigmoid(20 * h - 10),
        foreground_threshold=ev.foreground_threshold,
        seed_depth=ev.seed_depth,
        min_size=ev.min_size,
        fill_holes=ev.fill_holes,
        max_hole_size=ev.max_hole_size,
    ).label


def test_evaluate_scores_what_the_model_predicts(threshold):
    """Every per-image and set score equals the metrics of an independent numpy computation
    of the model's nuclei, image by image; modality subsets average their own images."""
    config, path = threshold
    report = evaluate.evaluate(None, path, split="train")
    scores, modalities = [], []
    for image_id, image, label, modality in evaluators.labelled_images(config.data, "train"):
        scores.append(metrics.dsb_image_score(label, _threshold_model_nuclei(config, image)))
        modalities.append(modality)
        row = report["images"][len(scores) - 1]
        assert row["id"] == image_id and row["n_true"] == int(label.max())
    assert [r["dsb_score"] for r in report["images"]] == pytest.approx(scores, abs=1e-9)
    assert report["metrics"]["dsb_score"] == pytest.approx(np.mean(scores), abs=1e-9)
    assert 0.05 < np.mean(scores)  # real matches, so the equalities above compare something
    for modality, values in report["by_modality"].items():
        mine = [s for s, m in zip(scores, modalities, strict=True) if m == modality]
        assert values["dsb_score"] == pytest.approx(np.mean(mine), abs=1e-12)
    assert report["markdown"].endswith("train_step7.md")


def test_trainer_and_evaluate_mode_give_identical_numbers(tmp_path):
    config = simple_cnn.get_config("tiny")
    config.eval.max_images = 0  # the trainer scores the whole split, as evaluate mode does
    train.train_and_evaluate(config, str(tmp_path))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    during = [r for r in rows if r["split"] == "eval_validation"][-1]
    assert during["step"] == 2 and [r["split"] for r in rows].count("eval_train") >= 1
    report = evaluate.evaluate(None, str(tmp_path))
    after = evaluators.scalars(report)
    assert {k for k in after if "/" in k}  # per-modality scalars are logged too
    assert {k: during[k] for k in after} == after  # bit for bit: one code path


def test_unlabelled_split_is_a_clear_error(threshold, monkeypatch):
    config, path = threshold

    def unlabelled(*args):
        yield {
            "id": "abc",
            "image": np.zeros((8, 8, 3), np.uint8),
            "label": -np.ones((8, 8)),
            "modality": 0,
        }

    monkeypatch.setattr(data, "examples", unlabelled)
    with pytest.raises(ValueError, match="split 'test' has no labels .*abc.*split:test"):
        evaluate.evaluate(None, path, split="test")
    with pytest.raises(ValueError, match="unknown split 'tset'"):
        evaluate.evaluate(None, path, split="tset")


def test_a_seeded_evaluation_is_written_beside_the_models_own(threshold, tmp_path):
    from configs import unet
    from tests.trained import save_checkpoint

    _, seeds_path = threshold
    config = unet.get_config("tiny")
    config.model.target = "three_class"
    save_checkpoint(config, str(tmp_path), step=3)
    config.eval.seeds_from = seeds_path
    report = evaluate.evaluate(config, str(tmp_path))
    name = f"validation_step3_seeds_{seeds_path.rstrip('/').split('/')[-1]}"
    assert report["json"].endswith(f"eval/{name}.json") and report["markdown"].endswith(".md")
    assert report["settings"]["seeds_from"] == seeds_path
    assert report["metrics"]["predicted_nuclei"] > 0  # seeded by the threshold model's nuclei
