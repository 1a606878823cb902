"""Reading a workdir back: parameters without the optimizer, the saved config, clear errors."""

import json

import numpy as np
import pytest

from configs import unet
from nucjax import checkpoint, models, postprocess, whole_image, workdir
from nucjax.data.images import convert_view
from nucjax.models import semantic
from tests.trained import (
    save_checkpoint,
    synthetic_image,
    threshold_config,
    threshold_params,
    threshold_workdir,
)


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


def test_seeds_from_loads_the_seed_model_whose_nuclei_seed_the_three_class_decoding(tmp_path):
    # Seed model: the threshold Simple CNN (finds the synthetic nuclei); seeded: a tiny
    # three-class U-Net with random weights, input view rgb like the seed model's.
    threshold_workdir(tmp_path / "seeds")
    config = unet.get_config("tiny")
    config.model.target = "three_class"
    save_checkpoint(config, str(tmp_path / "unet"), step=2)
    config.eval.seeds_from = str(tmp_path / "seeds")
    config.eval.tile_size, config.eval.tile_overlap = 64, 16
    model = workdir.load(str(tmp_path / "unet"), config)
    assert model.seeds.step == 7 and model.seeds.config.model.name == "simple_cnn"
    assert model.seeds.config.eval.flip_tta is False  # the seeded model's switch
    config.eval.flip_tta = True
    assert workdir.load(str(tmp_path / "unet"), config).seeds.config.eval.flip_tta is True
    config.eval.flip_tta = False

    image, _ = synthetic_image((64, 64), seed=3)
    got = whole_image.segment_image(model.spec, model.variables, image, config.eval, model.seeds)
    ev = model.seeds.config.eval
    ev.tile_size, ev.tile_overlap = 64, 16
    seeds = whole_image.segment_image(model.seeds.spec, model.seeds.variables, image, ev)
    assert seeds.instances.label.max() > 0
    probs = semantic.probabilities(got.outputs, "three_class", config.model.output_activation)
    want = postprocess.instances_from_three_class_seeded(
        np.asarray(probs),
        seeds.instances.label,
        seed_erosion=config.eval.seed_erosion,
        foreground_threshold=config.eval.foreground_threshold,
        min_size=config.eval.min_size,
        fill_holes=config.eval.fill_holes,
        max_hole_size=config.eval.max_hole_size,
    )
    np.testing.assert_array_equal(got.instances.label, want.label)
    # Without seeds the same outputs decode differently (else this test could not fail).
    plain = whole_image.instances(model.spec, got.outputs, 64, 64).label
    assert not np.array_equal(plain, want.label)
    # eval.seed_min_score above the best seed's score: no seed, so no nucleus.
    config.eval.seed_min_score = min(1.0, float(seeds.instances.scores.max()) + 1e-3)
    strict = whole_image.instances(models.build(config), got.outputs, 64, 64, seeds.instances)
    assert want.label.max() > 0 and strict.label.max() == 0


def test_seeds_from_errors_name_the_field(tmp_path):
    threshold_workdir(tmp_path / "seeds")
    config = threshold_config()  # a binary model cannot be seeded
    save_checkpoint(config, str(tmp_path / "binary"), step=1)
    config.eval.seeds_from = str(tmp_path / "seeds")
    with pytest.raises(ValueError, match="seeds_from=.*three-class per-pixel model"):
        workdir.load(str(tmp_path / "binary"), config)
    config = unet.get_config("tiny")
    config.model.target = "three_class"
    config.data.input_view = "grey_inverted"
    save_checkpoint(config, str(tmp_path / "unet"), step=1)
    config.eval.seeds_from = str(tmp_path / "seeds")
    with pytest.raises(ValueError, match="input view 'rgb', which cannot be made from .*'grey"):
        workdir.load(str(tmp_path / "unet"), config)
    config.eval.seeds_from = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        workdir.load(str(tmp_path / "unet"), config)


def test_a_seed_model_of_another_view_gets_its_own_input(tmp_path):
    # Seed model in grey_inverted, seeded U-Net in inverted: the seeds are those the seed
    # model finds in the grey view made from the U-Net's input (images.convert_view).
    seed_config = threshold_config()
    seed_config.data.input_view = "grey_inverted"
    save_checkpoint(seed_config, str(tmp_path / "seeds"), step=7, params_fn=threshold_params)
    config = unet.get_config("tiny")
    config.model.target = "three_class"
    config.data.input_view = "inverted"
    save_checkpoint(config, str(tmp_path / "unet"), step=2)
    config.eval.seeds_from = str(tmp_path / "seeds")
    config.eval.tile_size, config.eval.tile_overlap = 64, 16
    model = workdir.load(str(tmp_path / "unet"), config)
    assert model.seeds.handed_view == "inverted" and model.handed_view == ""

    image, _ = synthetic_image((64, 64), seed=3)
    image = image * np.array([1.0, 0.2, 0.6], np.float32) + np.float32([1.0, 0, 0])  # colour
    got = whole_image.segment_image(model.spec, model.variables, image, config.eval, model.seeds)
    ev = model.seeds.config.eval
    ev.tile_size, ev.tile_overlap = 64, 16
    grey = convert_view(image, "inverted", "grey_inverted")
    seeds = whole_image.segment_image(model.seeds.spec, model.seeds.variables, grey, ev)
    want = whole_image.instances(model.spec, got.outputs, 64, 64, seeds.instances)
    np.testing.assert_array_equal(got.instances.label, want.label)
    unconverted = whole_image.segment_image(model.seeds.spec, model.seeds.variables, image, ev)
    assert not np.array_equal(unconverted.instances.label, seeds.instances.label)
