"""The shared trainer on ResNet from a pretrained backbone: 4 fake devices, freezing, resume."""

import os

import jax
import numpy as np

from configs import resnet as resnet_config
from nucjax import checkpoint, models, train
from nucjax.models import keras_import


def _pretrained_backbone(config, path) -> dict:
    """A backbone saved in the importer's checkpoint format, from weights unlike a fresh init."""
    spec = models.build(config)
    image = np.zeros((1, 64, 64, 3), np.float32)
    variables = jax.jit(lambda k: spec.module.init(k, image, train=False))(jax.random.PRNGKey(7))
    backbone = {k: variables[k]["backbone"] for k in ("params", "batch_stats")}
    keras_import.save_backbone(path, backbone, source="test")
    return jax.device_get(backbone["params"])


def _restored(config, workdir):
    from tests.trained import state_template

    spec = models.build(config)
    template = state_template(spec, config)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), every_steps=1, keep=3)
    state, step = ckpt.restore(template, checkpoint.describe(config.model.name, template.params))
    return step, jax.device_get(state.params)


def test_trains_from_pretrained_backbone_frozen_then_released_and_resumes(tmp_path):
    config = resnet_config.get_config("tiny")
    pretrained = _pretrained_backbone(config, str(tmp_path / "backbone"))
    config.model.pretrained = str(tmp_path / "backbone")
    config.model.freeze_backbone_steps = 2
    config.train.num_steps = 2
    workdir = str(tmp_path / "run")

    summary = train.train_and_evaluate(config, workdir)
    assert summary["devices"] == 4
    step, params = _restored(config, workdir)
    assert step == 2
    # Frozen for two steps: the backbone is still exactly the pretrained one, the head moved.
    jax.tree.map(np.testing.assert_array_equal, params["backbone"], pretrained)

    config.train.num_steps = 4  # the same command with more steps resumes at step 2
    assert train.train_and_evaluate(config, workdir)["resumed_from"] == 2
    step, params = _restored(config, workdir)
    assert step == 4
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params["backbone"], pretrained)
    assert max(jax.tree.leaves(moved)) > 0.0
