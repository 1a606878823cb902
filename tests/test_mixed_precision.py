"""config.model.compute_dtype: bfloat16 compute, float32 parameters and loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import unet
from nucjax import models, parallel, train
from nucjax.data import synthetic
from nucjax.models.spec import cast_floats


def _batch(size=64, n=4):
    examples = list(synthetic.synthetic_examples(n, size, seed=3))
    image = np.stack([(e["image"] - 128.0) / 64.0 for e in examples]).astype(np.float32)
    label = np.stack([e["label"] for e in examples])
    return {"image": image, "label": label, "valid": np.ones(n, np.float32)}


def _first_step(dtype):
    config = unet.get_config("tiny")
    config.model.batch_norm = True
    config.model.dropout = (0.0, 0.0, 0.0)
    config.model.compute_dtype = dtype
    spec = models.build(config)
    mesh = parallel.make_mesh()
    tx = train.make_optimizer(spec, config, 10)
    state = train.init_state(spec, tx, config, mesh)
    step = train.make_train_step(spec, tx, mesh)
    state, sums = step(state, parallel.shard_batch(_batch(), mesh))
    return train.means(sums)["loss"], jax.device_get(state)


def test_bfloat16_loss_equals_float32_within_tolerance():
    """The tiny U-Net's first-step loss in bfloat16 is within 1% of float32's (bfloat16 keeps
    8 significant bits: ~0.4% per rounding); it is not bit-equal (bfloat16 really ran), and
    parameters, optimizer state and batch statistics stay float32."""
    loss32, state32 = _first_step("float32")
    loss16, state16 = _first_step("bfloat16")
    assert loss16 != loss32
    assert abs(loss16 - loss32) <= 0.01 * abs(loss32), (loss16, loss32)
    for tree in (state16.params, state16.opt_state, state16.batch_stats):
        for leaf in jax.tree.leaves(tree):
            assert not jnp.issubdtype(leaf.dtype, jnp.floating) or leaf.dtype == jnp.float32
    assert jax.tree.structure(state16.params) == jax.tree.structure(state32.params)


def test_cast_floats_leaves_integers_and_unknown_dtype_is_an_error():
    tree = {"a": np.ones(2, np.float32), "b": np.arange(3), "c": np.array([True])}
    cast = cast_floats(tree, jnp.bfloat16)
    assert cast["a"].dtype == jnp.bfloat16 and cast["b"].dtype == tree["b"].dtype
    assert cast["c"].dtype == bool
    config = unet.get_config("tiny")
    config.model.compute_dtype = "float16"
    with pytest.raises(ValueError, match=r"config\.model\.compute_dtype='float16'"):
        models.build(config)
