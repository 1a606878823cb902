"""experiments/keras_nets.py: the Keras twins experiments/bench_vs_keras.py times against nucjax
must be the same networks (parameter counts) and train on the same loss (values)."""

import jax
import numpy as np
import pytest

from nucjax import models
from nucjax.configs import resnet as resnet_config
from nucjax.configs import unet as unet_config
from nucjax.models import semantic

pytest.importorskip("tensorflow")
from experiments import keras_nets  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

SIZE = 64


def nucjax_parameters(config) -> int:
    """Parameters + batch statistics of the network `config` builds (shapes only)."""
    spec = models.build(config)
    shapes = jax.eval_shape(lambda k: spec.init_variables(k, SIZE), jax.random.PRNGKey(0))
    return sum(x.size for x in jax.tree.leaves(shapes))


def unet_parameters_by_hand(base: int, depth: int) -> int:
    """The paper U-Net's count from its layer list: 3x3 convolutions with bias, 2x2 transposed
    convolutions with bias, a 1x1 output convolution to one channel."""
    conv = lambda k, cin, cout: k * k * cin * cout + cout
    width = [base * 2**level for level in range(depth)]
    total, cin = 0, 3
    for w in width:  # encoder
        total += conv(3, cin, w) + conv(3, w, w)
        cin = w
    for level in reversed(range(depth - 1)):  # decoder
        w = width[level]
        total += conv(2, cin, w) + conv(3, 2 * w, w) + conv(3, w, w)
        cin = w
    return total + conv(1, cin, 1)


@pytest.mark.parametrize("variant", ["paper", "best"])
def test_unet_twin_has_nucjax_parameter_count(variant):
    config = unet_config.get_config(variant)
    count = keras_nets.network(config, SIZE).count_params()
    assert count == nucjax_parameters(config)
    if variant == "paper":
        assert count == unet_parameters_by_hand(16, 5) == 1_941_105


def test_resnet50_twin_has_nucjax_parameter_count():
    config = resnet_config.get_config("paper")
    config.model.depth = 50
    assert keras_nets.network(config, SIZE).count_params() == nucjax_parameters(config)


def test_resnet_twin_refuses_what_keras_lacks():
    config = resnet_config.get_config("quick")  # depth 18, width 32
    with pytest.raises(ValueError, match="depth=18, width=32"):
        keras_nets.network(config, SIZE)


@pytest.mark.parametrize(
    ("config_name", "target", "border_weight"),
    [
        ("unet", "binary", 0.0),
        ("unet", "binary", 2.0),
        ("resnet", "three_class", 0.0),
    ],
)
def test_keras_loss_equals_nucjax_loss(config_name, target, border_weight):
    config = {"unet": unet_config, "resnet": resnet_config}[config_name].get_config("paper")
    config.model.target, config.model.border_weight = target, border_weight
    rng = np.random.default_rng(0)
    label = np.zeros((3, 12, 12), np.int32)
    label[:, 2:6, 2:7], label[:, 6:10, 3:9] = 1, 2  # touching nuclei: borders and a gap
    label[1, :, 10:] = -1  # unlabelled pixels
    valid = np.array([1.0, 1.0, 0.0], np.float32)  # a padded example
    logits = rng.normal(size=(3, 12, 12, semantic.num_classes(config.model))).astype(np.float32)

    terms, _ = semantic.semantic_loss(
        logits,
        {"label": label, "valid": valid},
        target=target,
        activation="sigmoid",
        border_weight=border_weight,
        dice_weight=0.0,
    )
    total, count = terms["pixel_ce"]
    inputs = keras_nets.loss_inputs(config.model, label, valid)
    got = float(keras_nets.loss(logits, **inputs))
    assert inputs["count"] == 12 * 12 + 12 * 10 == float(count)
    assert got == pytest.approx(float(total) / float(count), rel=1e-5)
