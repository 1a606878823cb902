"""Reading a workdir back: parameters without the optimizer, the saved config, clear errors."""

import json

import numpy as np
import pytest

from configs import unet
from nucjax import checkpoint, whole_image, workdir
from tests.trained import synthetic_image, threshold_config, threshold_workdir


def test_load_restores_the_saved_weights_with_the_saved_config(tmp_path):
    threshold_workdir(tmp_path)
    model = workdir.load(str(tmp_path))  # no config: the one the workdir saved
    assert model.step == 7 and model.config.model.target == "binary"
    assert set(model.variables) == {"params", "batch_stats"}
    np.testing.assert_array_equal(
        np.asarray(model.variables["params"]["output"]["kernel"])[1, 1, 0, 0], 20.0
    )
    image, label = synthetic_image((64, 64), seed=3)
    ev = model.config.eval
    ev.tile_size, ev.tile_overlap = 64, 16
    p = whole_image.segment_image(model.spec, model.variables, image, ev)
    assert p.instances.label.max() > 0 and p.instances.scores.shape == (p.instances.label.max(),)
    assert ((p.foreground > 0.5) == (label > 0)).mean() > 0.8  # it sees the nuclei


def test_optimizer_and_evaluation_settings_may_differ_the_network_may_not(tmp_path):
    threshold_workdir(tmp_path)
    config = threshold_config()
    config.optim.name = "sgd"  # the trainer's optimizer state has Adam's shape: never read
    config.eval.min_size = 3
    model = workdir.load(str(tmp_path), config)
    assert model.config.eval.min_size == 3 and model.step == 7
    config.model.width = 16
    config.data.input_view = "grey_inverted"
    with pytest.raises(workdir.ConfigMismatchError) as error:
        workdir.load(str(tmp_path), config)
    message = str(error.value)
    assert (
        "model.width: 8 vs 16" in message and "data.input_view: 'rgb' vs 'grey_inverted'" in message
    )
    assert "optim." not in message and "eval." not in message


def test_clear_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointNotFoundError, match="no checkpoint in"):
        workdir.load(str(tmp_path / "empty"), threshold_config())
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        workdir.load(str(tmp_path / "empty"))
    threshold_workdir(tmp_path)
    with pytest.raises(checkpoint.CheckpointNotFoundError, match=r"step 3 .* has \[7\]"):
        workdir.load(str(tmp_path), step=3)
    (tmp_path / "config.json").unlink()  # a workdir from before configs were saved
    with pytest.raises(checkpoint.IncompatibleCheckpointError, match="'simple_cnn' model"):
        workdir.load(str(tmp_path), unet.get_config("tiny"))


def test_a_config_saved_before_new_fields_gets_their_defaults(tmp_path):
    threshold_workdir(tmp_path)
    saved = json.load(open(tmp_path / "config.json"))
    del saved["eval"]["flip_tta"], saved["model"]["dice_weight"]  # as an older nucjax wrote it
    saved["eval"]["min_size"] = 7
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = workdir.saved_config(str(tmp_path))
    assert config.eval.flip_tta is False and config.model.dice_weight == 0.0
    assert config.eval.min_size == 7 and config.model.target == "binary"  # the run's own
    assert workdir.load(str(tmp_path)).step == 7
