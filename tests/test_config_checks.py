"""Config range checks: each bad value is one ConfigError naming field, value and range."""

import re

import pytest

from configs import mask_rcnn, resnet, simple_cnn, unet
from nucjax import checkpoint, config_checks, models, train

# (config module, field, bad value, what the message says is allowed)
BAD = [
    (unet, "train.keep_checkpoints", 0, ">= 1"),
    (unet, "optim.learning_rate", -0.01, "> 0"),
    (unet, "optim.learning_rate", float("nan"), "> 0"),
    (unet, "train.log_every_steps", 0, ">= 1"),
    (unet, "train.batch_size", 0, ">= 1"),
    (unet, "train.num_steps", -1, ">= 0"),
    (unet, "train.checkpoint_every_steps", -5, ">= 0"),
    (unet, "eval.tile_overlap", -1, ">= 0"),
    (unet, "eval.tile_overlap", 64, "< eval.tile_size (64)"),
    (unet, "eval.foreground_threshold", 1.5, "in [0, 1]"),
    (unet, "eval.seed_threshold", -0.1, "in [0, 1]"),
    (unet, "data.validation_fraction", 1.0, "in [0, 1)"),
    (unet, "model.dropout", (0.1, 1.0, 0.2), "in [0, 1)"),
    (unet, "data.crop_size", 0, "a positive multiple of the network's stride 4"),
    (unet, "data.crop_size", 62, "a positive multiple of the network's stride 4 (e.g. 60)"),
    (resnet, "data.crop_size", 48, "a positive multiple of the network's stride 32 (e.g. 32)"),
    (mask_rcnn, "eval.score_threshold", 2.0, "in [0, 1]"),
    (mask_rcnn, "model.roi_positive_fraction", -0.5, "in [0, 1]"),
]


def _set(config, field: str, value):
    section, name = field.split(".")
    setattr(config[section], name, value)
    return config


@pytest.mark.parametrize(
    "module, field, value, allowed", BAD, ids=[f"{f}={v}" for _, f, v, _ in BAD]
)
def test_each_check_names_field_value_and_range(module, field, value, allowed):
    config = _set(module.get_config("tiny"), field, value)
    expected = f"config.{field}={value!r} is out of range: it must be {allowed}"
    with pytest.raises(config_checks.ConfigError, match=re.escape(expected)):
        config_checks.check_training(config, models.build(config).stride)


@pytest.mark.parametrize("module", [simple_cnn, unet, resnet, mask_rcnn])
def test_every_shipped_variant_passes(module):
    for variant in module.VARIANTS:
        config = module.get_config(variant)
        config_checks.check_training(config, models.build(config).stride)


def test_trainer_checks_before_it_builds_anything(tmp_path):
    """keep_checkpoints=0 used to train and then delete every checkpoint, exit 0."""
    config = _set(unet.get_config("tiny"), "train.keep_checkpoints", 0)
    with pytest.raises(config_checks.ConfigError, match="train.keep_checkpoints=0"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not checkpoint.saved_steps(str(tmp_path / "checkpoints"))
    assert not (tmp_path / "checkpoints").exists()
