"""Keras ResNet weights -> orbax checkpoint (keras_import) -> a model's backbone (pretrained)."""

import functools
import glob
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from nucjax.models import keras_import, layers, pretrained, resnet

keras = pytest.importorskip("keras")
pytestmark = [
    # Keras's TF backend calls np.array on its variables the pre-numpy-2 way.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
    # After a failed read of a damaged checkpoint, orbax's event loop closes under a callback.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

KERAS_FEATURES = {
    "stem": "conv1_relu",
    "C2": "conv2_block3_out",
    "C3": "conv3_block{}_out",
    "C4": "conv4_block{}_out",
    "C5": "conv5_block3_out",
}
RESNET50_TRAINABLE = 23_534_592  # keras.applications.ResNet50(include_top=False)
RESNET50_STATISTICS = 53_120


def random_keras_resnet(depth: int, seed: int = 0):
    """A Keras ResNet whose biases and batch-norm statistics are random too, not 0 and 1.

    Default statistics would hide a swapped mean/variance or an unmapped bias.
    """
    model = getattr(keras.applications, f"ResNet{depth}")(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0.0, 0.2, beta.shape),
                    rng.normal(0.0, 0.2, mean.shape),
                    rng.uniform(0.5, 2.0, var.shape),
                ]
            )
        elif isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0.0, 0.1, bias.shape)])
    return model


def keras_features(model, x: np.ndarray) -> dict[str, np.ndarray]:
    blocks = {50: (4, 6), 101: (4, 23), 152: (8, 36)}[
        keras_import.infer_depth(layer.name for layer in model.layers)
    ]
    names = dict(KERAS_FEATURES)
    names["C3"], names["C4"] = names["C3"].format(blocks[0]), names["C4"].format(blocks[1])
    outputs = [model.get_layer(n).output for n in names.values()]
    values = keras.Model(model.input, outputs)(x)
    return {k: np.asarray(v) for k, v in zip(names, values, strict=True)}


def caffe_pixels(seed: int, shape=(2, 64, 64, 3)) -> np.ndarray:
    pixels = np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)
    return np.asarray(keras.applications.resnet.preprocess_input(pixels.copy()))


def zeros_variables(module, image_shape):
    """The module's variables as numpy zeros, without paying for a compiled init."""
    x = jax.ShapeDtypeStruct(image_shape, jnp.float32)
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def assert_backbone_matches_keras(variables, keras_model, seed: int):
    x = caffe_pixels(seed)
    expected = keras_features(keras_model, x)
    depth = keras_import.infer_depth(layer.name for layer in keras_model.layers)
    backbone = resnet.ResNetBackbone(depth=depth)
    got = jax.jit(functools.partial(backbone.apply, train=False))(variables, x)
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        scale = np.abs(want).max()
        np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-4 * scale, err_msg=name)


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    """(Keras model, its .weights.h5, the orbax checkpoint made by the CLI)."""
    folder = tmp_path_factory.mktemp("resnet50")
    model = random_keras_resnet(50)
    weights = str(folder / "resnet50.weights.h5")
    model.save_weights(weights)
    checkpoint = str(folder / "backbone")
    keras_import.main(["--depth=50", f"--out={checkpoint}", f"--weights={weights}"])
    return model, weights, checkpoint


def test_imported_resnet50_gives_keras_features_at_every_stage(resnet50):
    model, _, checkpoint = resnet50
    state, meta = pretrained.read_backbone(checkpoint)
    assert (meta["depth"], meta["width"]) == (50, 64)
    assert_backbone_matches_keras(state, model, seed=1)


def test_caffe_adapter_agrees_with_keras_preprocess_input():
    normalised = np.random.default_rng(2).normal(size=(1, 8, 8, 3)).astype(np.float32)
    pixels = np.clip(normalised * 64 + 128, 0, 255)
    want = keras.applications.resnet.preprocess_input(pixels.copy())
    np.testing.assert_allclose(layers.caffe_adapter(jnp.asarray(normalised)), want, atol=1e-4)


def test_load_pretrained_fills_the_backbone_keeps_the_head_and_reports_counts(resnet50):
    model, _, checkpoint = resnet50
    module = resnet.ResNetSeg(num_classes=3, depth=50, width=64)
    fresh = zeros_variables(module, (1, 64, 64, 3))
    fresh["params"]["logits"]["bias"] = np.full(3, 7.0, np.float32)
    variables, report = pretrained.load_pretrained(checkpoint, fresh)
    assert report.loaded_params == RESNET50_TRAINABLE
    assert report.loaded_batch_stats == RESNET50_STATISTICS
    total = sum(x.size for x in jax.tree.leaves(fresh["params"]))
    assert report.fresh_params == total - RESNET50_TRAINABLE > 0
    assert "23,534,592" in str(report)
    np.testing.assert_array_equal(variables["params"]["logits"]["bias"], 7.0)
    bn = variables["batch_stats"]["backbone"]["conv3_block2"]["2_bn"]
    np.testing.assert_array_equal(bn["var"], model.get_layer("conv3_block2_2_bn").moving_variance)
    np.testing.assert_array_equal(
        variables["params"]["backbone"]["conv1_conv"]["bias"],
        model.get_layer("conv1_conv").bias,
    )


@pytest.mark.parametrize(
    "depth, width, match",
    [
        (101, 64, r"ResNet-50 .*layer conv4_block7_1_conv \(params kernel\) is missing"),
        (18, 64, r"conv2_block1_1_conv .*shape \(1, 1, 64, 64\).*\(3, 3, 64, 64\)"),
        (50, 32, r"conv1_conv \(params kernel\) .*shape \(7, 7, 3, 64\).*\(7, 7, 3, 32\)"),
    ],
)
def test_a_checkpoint_that_does_not_fit_names_the_layer(resnet50, depth, width, match):
    module = resnet.ResNetSeg(num_classes=3, depth=depth, width=width)
    with pytest.raises(pretrained.PretrainedMismatch, match=match):
        pretrained.load_pretrained(resnet50[2], zeros_variables(module, (1, 64, 64, 3)))


def test_a_model_without_backbone_cannot_take_pretrained_weights(resnet50):
    with pytest.raises(pretrained.PretrainedMismatch, match="no 'backbone'"):
        pretrained.load_pretrained(resnet50[2], {"params": {"conv": {}}})


def _damaged_copy(checkpoint: str, folder, how: str) -> str:
    path = str(folder / how)
    shutil.copytree(checkpoint, path)
    data = max(glob.glob(os.path.join(path, "ocdbt.process_0", "d", "*")), key=os.path.getsize)
    if how == "flipped":
        with open(data, "r+b") as f:
            f.seek(os.path.getsize(data) // 3)
            f.write(b"\x7f" * 64)
    elif how == "truncated":
        os.truncate(data, os.path.getsize(data) // 2)
    elif how == "empty":
        shutil.rmtree(path)
        os.makedirs(path)
    return path


# Flipped bytes either break the compressed stream (tensorstore's error, wrapped as "cannot
# read ... damaged") or decode to wrong numbers (the checksum); which one depends on where the
# flip lands in that run's random weights, so both count. The checksum path alone is pinned
# down by test_a_wrong_checksum_is_named below.
@pytest.mark.parametrize(
    "how, match",
    [("flipped", "damaged"), ("truncated", "cannot read"), ("empty", "cannot")],
)
def test_a_damaged_checkpoint_fails_clearly(resnet50, tmp_path, how, match):
    path = _damaged_copy(resnet50[2], tmp_path, how)
    with pytest.raises(pretrained.PretrainedMismatch, match=match):
        pretrained.read_backbone(path)
    with pytest.raises(FileNotFoundError):
        pretrained.read_backbone(str(tmp_path / "absent"))


def test_a_wrong_checksum_is_named(resnet50, tmp_path, monkeypatch):
    """An array that reads back but differs from what was written (silent corruption)."""
    state, _ = pretrained.read_backbone(resnet50[2])
    real = keras_import.array_checksums

    def off_by_one(tree):
        sums = real(tree)
        sums["params/conv1_conv/kernel"] += 1
        return sums

    monkeypatch.setattr(keras_import, "array_checksums", off_by_one)
    path = keras_import.save_backbone(str(tmp_path / "wrong"), state)
    with pytest.raises(pretrained.PretrainedMismatch, match="damaged: array params/conv1_conv/k"):
        pretrained.read_backbone(path)


@pytest.mark.filterwarnings("ignore::UserWarning:keras.*")  # per layer that did not load
def test_a_keras_file_for_another_depth_is_refused(resnet50, tmp_path):
    with pytest.raises(pretrained.PretrainedMismatch, match="ResNet101.*conv4_block7"):
        keras_import.convert(101, str(tmp_path / "out"), resnet50[1])
    assert not os.path.exists(tmp_path / "out")


def test_maybe_load_pretrained_is_identity_without_a_path_and_loads_with_one(resnet50):
    config = ml_collections.ConfigDict({"model": {"name": "unet"}})
    variables = {"params": {"conv": {"kernel": np.ones(3)}}}
    assert pretrained.maybe_load_pretrained(config, variables) is variables
    config.model.pretrained = ""
    assert pretrained.maybe_load_pretrained(config, variables) is variables
    config.model.pretrained = resnet50[2]
    fresh = zeros_variables(resnet.ResNetSeg(num_classes=1, depth=50), (1, 32, 32, 3))
    loaded = pretrained.maybe_load_pretrained(config, fresh)
    assert np.any(loaded["params"]["backbone"]["conv1_conv"]["kernel"] != 0)


def test_infer_depth_tells_basic_from_bottleneck_blocks():
    names = ["conv1_conv"]
    for stage, count in zip(range(2, 6), (3, 4, 6, 3), strict=True):
        names += [f"conv{stage}_block{b}_2_conv" for b in range(1, count + 1)]
    assert keras_import.infer_depth(names) == 34
    assert keras_import.infer_depth(names + ["conv2_block1_3_conv"]) == 50


def test_imported_resnet152_gives_keras_features(tmp_path):
    model = random_keras_resnet(152, seed=3)
    weights = str(tmp_path / "resnet152.weights.h5")
    model.save_weights(weights)
    checkpoint = keras_import.convert(152, str(tmp_path / "backbone"), weights)
    state, meta = pretrained.read_backbone(checkpoint)
    assert meta["depth"] == 152
    assert_backbone_matches_keras(state, model, seed=4)
