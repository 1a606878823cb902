"""Whole-image inference: tiling, stride padding, checkpoint loading.

`threshold_workdir` writes a checkpoint of a hand-set Simple CNN (binary target) that marks
pixels brighter than the image mean as nucleus: a deterministic model that finds real nuclei
in synthetic fluorescence images without training, so the evaluate and predict tests can
check the nuclei they get.
"""

import dataclasses
import os

import jax
import numpy as np
import pytest

from configs import simple_cnn, unet
from nucjax import checkpoint, inference, models
from nucjax.data import synthetic
from nucjax.data.pipeline import normalize_image


def threshold_config():
    config = simple_cnn.get_config("tiny")
    config.model.target = "binary"
    config.data.synthetic_brightfield_fraction = 0.0  # bright nuclei on dark: what it can see
    return config


def _threshold_params(params):
    """Every layer passes (r + g + b) forward through a monotone sigmoid; out: 20 (h - 0.5)."""
    p = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), params)
    p["BatchNorm_0"]["scale"][:] = 1.0
    p["dense_0"]["kernel"][0, 0, :, 0] = 4.0 / 3.0
    for i in range(1, 6):
        p[f"dense_{i}"]["kernel"][0, 0, 0, 0] = 8.0
        p[f"dense_{i}"]["bias"][0] = -4.0
    p["output"]["kernel"][1, 1, 0, 0] = 20.0
    p["output"]["bias"][0] = -10.0
    return p


def _random_params(params, seed=0):
    """Random weights shaped like `params` (ShapeDtypeStructs), without running the slow init."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: rng.normal(0, 0.3, x.shape).astype(np.float32), params)


def random_model(config, seed=0):
    """(spec, variables): random weights, batch norm statistics mean 0, variance 1."""
    spec = models.build(config)
    template = inference.state_template(spec, config)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, x: np.full(x.shape, 1.0 if path[-1].key == "var" else 0.0, np.float32),
        template.batch_stats,
    )
    return spec, {"params": _random_params(template.params, seed), "batch_stats": stats}


def save_checkpoint(config, workdir, *, step=1, params_fn=_random_params):
    """A checkpoint as the trainer writes it: a TrainState with params_fn(param shapes)."""
    spec = models.build(config)
    template = inference.state_template(spec, config)
    state = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), template)
    state = state.replace(params=params_fn(template.params))
    state = jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), state, template)
    state = state.replace(batch_stats=random_model(config)[1]["batch_stats"])
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), every_steps=0, keep=3)
    ckpt.save(step, state, checkpoint.describe(config.model.name, state.params))
    ckpt.wait()
    ckpt.close()
    return state


def threshold_workdir(workdir):
    config = threshold_config()
    save_checkpoint(config, str(workdir), step=7, params_fn=_threshold_params)
    return config


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    image, label = synthetic.synthetic_example(rng, shape, False, colour="grey")
    return normalize_image(image), label


@pytest.mark.parametrize("extent", [1, 5, 64, 65, 97, 150, 300])
def test_tile_layout_partitions_on_the_stride_grid(extent):
    stride, tile, overlap = 4, 64, 16
    padded = inference.round_to_stride(extent, stride)
    layout = inference.tile_layout(padded, tile, overlap, stride)
    owned = np.zeros(padded, int)
    for start, lo, hi in layout:
        assert start % stride == 0 and 0 <= start and start + min(tile, padded) <= padded
        owned[lo:hi] += 1
        # Every owned pixel is at least overlap / 2 from an edge inside the image.
        assert lo == 0 or lo - start >= overlap // 2
        assert hi == padded or start + tile - hi >= overlap // 2
    assert (owned == 1).all()


def test_tiled_prediction_equals_single_pass_for_a_small_receptive_field():
    """Simple CNN sees 3x3 pixels: tiles overlapping by 8 must reproduce one pass exactly."""
    config = simple_cnn.get_config("tiny")
    spec, variables = random_model(config)
    image, _ = _image((150, 97))
    whole = inference.predict_image(spec, variables, image, tile_size=256, overlap=0)
    tiled = inference.predict_image(spec, variables, image, tile_size=32, overlap=8)
    assert whole.shape == tiled.shape == (150, 97, 3)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)
    # Without overlap the tile edges differ: the test can tell tiling apart from one pass.
    seams = inference.predict_image(spec, variables, image, tile_size=32, overlap=0)
    assert np.abs(seams - whole).max() > 1e-3


def test_unet_whole_image_of_any_size():
    """150 x 97 is no multiple of the U-Net's stride and larger than its 64 px tile."""
    config = unet.get_config("tiny")
    spec, variables = random_model(config, seed=1)
    assert spec.stride == 4
    image, _ = _image((150, 97), seed=1)
    out = inference.predict_image(spec, variables, image, tile_size=64, overlap=16)
    assert out.shape == (150, 97, 1) and out.dtype == np.float32 and np.isfinite(out).all()
    prediction = inference.segment_image(
        spec,
        variables,
        image,
        tile_size=66,
        overlap=16,  # 66 rounds down to 64
    )
    np.testing.assert_array_equal(prediction.outputs, out)
    assert prediction.foreground.shape == prediction.instances.label.shape == (150, 97)


def test_load_model_restores_the_saved_weights(tmp_path):
    config = threshold_workdir(tmp_path)
    spec, variables, step = inference.load_model(config, str(tmp_path))
    assert step == 7
    np.testing.assert_array_equal(
        np.asarray(variables["params"]["output"]["kernel"])[1, 1, 0, 0], 20.0
    )
    image, label = _image((64, 64), seed=3)
    p = inference.segment_image(spec, variables, image, tile_size=64, overlap=16)
    assert p.instances.label.max() > 0 and p.instances.scores.shape == (p.instances.label.max(),)
    assert ((p.foreground > 0.5) == (label > 0)).mean() > 0.8  # it sees the nuclei


def test_load_model_clear_errors(tmp_path):
    with pytest.raises(inference.CheckpointNotFoundError, match="no checkpoint in"):
        inference.load_model(threshold_config(), str(tmp_path / "empty"))
    threshold_workdir(tmp_path)
    with pytest.raises(inference.CheckpointNotFoundError, match=r"step 3 .* has \[7\]"):
        inference.load_model(threshold_config(), str(tmp_path), step=3)
    with pytest.raises(checkpoint.IncompatibleCheckpointError, match="'simple_cnn' model"):
        inference.load_model(unet.get_config("tiny"), str(tmp_path))


def test_write_atomically_leaves_nothing_on_failure(tmp_path):
    path = str(tmp_path / "out.txt")
    inference.write_text(path, "old")

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        inference.write_atomically(path, crash)
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_untileable_spec_runs_whole_padded_image_and_is_cropped_back():
    config = threshold_config()
    spec, variables = random_model(config)
    variables = {**variables, "params": _threshold_params(variables["params"])}
    # Whole-image inference, as a detector's spec asks for.
    whole = dataclasses.replace(spec, tileable=False, stride=8)
    image, _ = _image((150, 97), seed=2)
    padded = inference.predict_image(whole, variables, image, tile_size=32, overlap=8)
    assert padded.shape == (152, 104, 1)  # padded to the stride, never tiled
    p = inference.segment_image(whole, variables, image, tile_size=32, overlap=8)
    tiled = inference.segment_image(spec, variables, image, tile_size=32, overlap=8)
    assert p.foreground.shape == p.instances.label.shape == (150, 97)
    np.testing.assert_allclose(p.foreground, tiled.foreground, atol=1e-5)
    n = int(p.instances.label.max())
    assert n > 0 and p.instances.scores.shape == (n,)
    assert set(np.unique(p.instances.label)) == set(range(n + 1))
