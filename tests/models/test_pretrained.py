"""The backbone hooks every model shares (nucjax.models.pretrained), without Keras."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nucjax import optim
from nucjax.models import pretrained


def test_backbone_mask_freezes_only_the_backbone_for_the_first_steps():
    params = {
        "backbone": {"conv1_conv": {"kernel": jnp.ones((2, 2))}},
        "logits": {"bias": jnp.ones(2)},
    }
    mask = pretrained.backbone_mask(params)
    assert mask == {"backbone": {"conv1_conv": {"kernel": True}}, "logits": {"bias": False}}
    tx = optax.chain(optim.freeze_until(1, pretrained.backbone_mask), optax.sgd(1.0))
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    first, state = tx.update(grads, state, params)
    second, _ = tx.update(grads, state, params)
    assert np.all(first["backbone"]["conv1_conv"]["kernel"] == 0)
    assert np.all(first["logits"]["bias"] == -1)
    assert np.all(second["backbone"]["conv1_conv"]["kernel"] == -1)
