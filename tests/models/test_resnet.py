"""ResNet backbones and the ResNet segmentation network (nucjax.models.resnet)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import resnet as resnet_config
from nucjax import models, parallel
from nucjax.models import resnet

BOTTLENECK_CHANNELS = (4, 8, 16, 32)  # width 1 bottleneck: 4x expansion of 1, 2, 4, 8


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_every_depth_gives_features_at_strides_4_to_32_and_full_size_logits(depth):
    width = 8
    module = resnet.ResNetSeg(num_classes=3, depth=depth, width=width, decoder_width=16)
    image = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), image)
    logits = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, image)
    assert logits.shape == (2, 64, 96, 3)

    backbone = resnet.ResNetBackbone(depth=depth, width=width)
    features = jax.eval_shape(
        lambda v, x: backbone.apply(v, x, train=False),
        {k: v["backbone"] for k, v in variables.items()},
        image,
    )
    expansion = 4 if depth >= 50 else 1
    assert features["stem"].shape == (2, 32, 48, width)
    for level, stride in zip(range(2, 6), (4, 8, 16, 32), strict=True):
        channels = width * 2 ** (level - 2) * expansion
        assert features[f"C{level}"].shape == (2, 64 // stride, 96 // stride, channels)
    blocks = resnet.STAGES[depth][1]
    for stage, count in enumerate(blocks):
        names = [k for k in variables["params"]["backbone"] if k.startswith(f"conv{stage + 2}_")]
        assert len(names) == count


def _num(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_resnet50_has_exactly_the_keras_parameter_count():
    # keras.applications.ResNet50(include_top=False).count_params(), statistics included.
    module = resnet.ResNetBackbone(depth=50, width=64)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
    assert _num(variables["params"]) + _num(variables["batch_stats"]) == 23_587_712
    assert _num(variables["batch_stats"]) == 53_120


def test_bad_sizes_depths_and_adapters_fail_clearly():
    with pytest.raises(ValueError, match="multiples of 32"):
        module = resnet.ResNetSeg(num_classes=1, depth=18, width=4, decoder_width=8)
        module.init(jax.random.key(0), jnp.zeros((1, 48, 64, 3)), train=False)
    with pytest.raises(ValueError, match="depth 20"):
        resnet.stage_blocks(20)
    with pytest.raises(ValueError, match="input_adapter"):
        module = resnet.ResNetSeg(num_classes=1, depth=18, width=4, input_adapter="torch")
        module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


def fast_init(module, image):
    # A jitted init with a key of nucjax's default (rbg) PRNG compiles quickly on CPU.
    return jax.jit(functools.partial(module.init, train=False))(jax.random.PRNGKey(0), image)


@pytest.fixture(scope="module")
def tiny_spec():
    return models.build(resnet_config.get_config("tiny"))


def test_build_gives_a_stride_32_spec_whose_batch_norm_syncs_over_the_data_axis(tiny_spec):
    assert tiny_spec.stride == resnet.STRIDE == 32
    assert tiny_spec.module.axis_name == tiny_spec.axis_name == "data"
    assert tiny_spec.module.depth == 18 and tiny_spec.module.num_classes == 3
    # Without `pretrained`, preparing variables changes nothing.
    assert tiny_spec.prepare_variables({"params": 1}) == {"params": 1}


def test_eval_runs_outside_shard_map_with_axis_name_set(tiny_spec):
    image = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    variables = fast_init(tiny_spec.module, image)
    logits = jax.jit(functools.partial(tiny_spec.module.apply, train=False))(variables, image)
    assert logits.shape == (2, 64, 64, 3) and np.all(np.isfinite(np.asarray(logits)))
    fg = tiny_spec.foreground(logits)
    assert fg.shape == (2, 64, 64)


def test_batch_norm_statistics_over_4_devices_equal_those_of_one_batch(tiny_spec):
    """In training, the statistics are synchronised over `data`: a wrong axis_name would fail."""
    module = tiny_spec.module
    image = (
        jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
        * jnp.arange(1.0, 5.0)[:, None, None, None]
    )
    variables = fast_init(module, image)

    def train_apply(module, image):
        return module.apply(variables, image, train=True, mutable=["batch_stats"])

    single_logits, single = jax.jit(functools.partial(train_apply, module.clone(axis_name=None)))(
        image
    )
    mesh = parallel.make_mesh(jax.devices()[:4])
    sharded = jax.shard_map(
        functools.partial(train_apply, module),
        mesh=mesh,
        in_specs=P("data"),
        out_specs=(P("data"), P()),
    )
    logits, stats = jax.jit(sharded)(image)
    np.testing.assert_allclose(logits, single_logits, rtol=1e-4, atol=1e-4)
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(single), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    before = jax.tree.leaves(variables["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(single), before, strict=True))


@pytest.mark.parametrize("block", [resnet.Bottleneck, resnet.BasicBlock])
def test_fusion_walls_change_no_parameter_output_or_gradient(block):
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
    plain, walled = (block(4, projection=True, wall=wall) for wall in (False, True))
    variables = plain.init(jax.random.key(0), x, train=False)

    def loss(params, x, net):
        y, _ = net.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(jnp.tanh(y) * jnp.arange(y.shape[-1]))

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    (want, want_grads), (got, got_grads) = (
        grad(variables["params"], x, net) for net in (plain, walled)
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The network's parameters are the same with and without walls (checkpoints load either).
    image = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    trees = [
        jax.eval_shape(
            lambda x, walls=walls: resnet.ResNetSeg(3, 50, 4, 8, fusion_walls=walls).init(
                jax.random.key(0), x, train=False
            ),
            image,
        )
        for walls in (False, True)
    ]
    assert jax.tree.structure(trees[0]) == jax.tree.structure(trees[1])
