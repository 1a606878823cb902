"""Data parallelism is exact: one train step on 4 fake devices equals one step on 1 device.

For every network at its `:tiny` size, the same global batch goes through one step on a
1-device mesh and on a 4-device mesh. The loss and every (sum, count) term, every parameter's
update and the batch-norm statistics must agree. The batch makes per-device counts differ
(unlabelled pixels in one image, a padding example with valid = 0), so dividing by a local
instead of the global count, averaging per-device means, or batch norm on per-device
statistics all fail here.

Randomness is taken out of the step by config, because the step folds the device index into
its PRNG key (so 1 and 4 devices draw differently by design): no dropout, and for Mask R-CNN
sample counts that take every candidate (see test_mask_rcnn_sampling_takes_every_candidate).
The optimiser is plain SGD at learning rate 1, so a parameter's update is minus its gradient
(Adam's first step, about lr * sign(g), would turn float noise in tiny gradients into
lr-sized differences).

Tolerances: the 4-device step sums in a different order, so float32 rounding differs. Sums
agree to 1e-5 relative and counts exactly; parameter updates (new - initial, = -gradient) to
1e-4 relative + 1e-6 absolute: a parameter near 1 (a batch-norm scale) rounds its update at
6e-8, a conv bias before batch norm has a true gradient of 0 and float noise of ~1e-9, and
the smallest meaningful leaf update measured is ~2e-5 (largest ~0.5). Batch-norm statistics
to 1e-5 relative + 1e-6 absolute. Measured deviations: at most 1.2e-7 anywhere.
"""

import jax
import numpy as np
import pytest

from configs import mask_rcnn, resnet, simple_cnn, unet
from nucjax import models, optim, parallel, train
from tests.test_learning import synthetic_set

MODULES = {"simple_cnn": simple_cnn, "unet": unet, "resnet": resnet, "mask_rcnn": mask_rcnn}


def take_every_candidate(config):
    """Mask R-CNN sampling that draws every anchor and every ROI candidate, whatever the key.

    sample_balanced draws min(#positives, floor(n * fraction)) positives and fills the rest
    with negatives: with fraction 1 and n at least the number of candidates it takes them all.
    RPN candidates: the anchors of a 64 x 64 image (P2..P6, 3 ratios: 3 * (16^2 + 8^2 + 4^2 +
    2^2 + 1) = 1023). ROI candidates: the post-NMS proposals plus the ground-truth boxes.
    mask_rois = 0 gives the mask head every sampled slot.
    """
    m = config.model
    m.rpn_samples, m.rpn_positive_fraction = 1024, 1.0
    m.roi_samples = m.train_top_k[1] + config.data.max_instances
    m.roi_positive_fraction = 1.0
    m.mask_rois = 0
    return config


def deterministic_config(name):
    config = MODULES[name].get_config("tiny")
    if name == "unet":
        config.model.dropout = ()
        config.model.batch_norm = True  # so that U-Net's statistics are checked too
    if name == "mask_rcnn":
        take_every_candidate(config)
    config.optim.name, config.optim.learning_rate = "sgd", 1.0
    config.optim.momentum, config.optim.warmup_steps, config.optim.grad_clip_norm = 0.0, 0, 0.0
    return config


@pytest.fixture(scope="module")
def batch():
    """4 synthetic 64 x 64 crops; image 0 partly unlabelled, image 3 a padding example."""
    images, labels = synthetic_set(4, seed=3)
    labels[0, :20] = -1
    return {"image": images, "label": labels, "valid": np.array([1, 1, 1, 0], np.float32)}


def _one_step(config, num_devices, batch):
    """(metric sums, initial params, updated params, batch stats), all on the host."""
    spec = models.build(config)
    mesh = parallel.make_mesh(jax.devices()[:num_devices])
    tx = optim.make_optimizer(config.optim, 10)
    state = train.init_state(spec, tx, config, mesh)
    initial = jax.device_get(state.params)  # the step donates the state
    step = train.make_train_step(spec, tx, mesh)
    state, sums = step(state, parallel.shard_batch(batch, mesh))
    return jax.device_get((sums, initial, state.params, state.batch_stats))


def _assert_updates_close(init_a, new_a, init_b, new_b):
    def check(path, a0, a1, b0, b1):
        np.testing.assert_array_equal(a0, b0, err_msg=f"initial {jax.tree_util.keystr(path)}")
        np.testing.assert_allclose(
            a1 - a0, b1 - b0, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path)
        )

    jax.tree_util.tree_map_with_path(check, init_a, new_a, init_b, new_b)


@pytest.mark.parametrize("name", list(MODULES))
def test_four_devices_equal_one(name, batch):
    assert len(jax.devices()) >= 4
    config = deterministic_config(name)
    one = _one_step(config, 1, batch)
    four = _one_step(config, 4, batch)
    sums_one, sums_four = one[0], four[0]
    assert sorted(sums_one) == sorted(sums_four)
    for key in sums_one:
        (s1, c1), (s4, c4) = sums_one[key], sums_four[key]
        assert float(c1) == float(c4), key
        np.testing.assert_allclose(s1, s4, rtol=1e-5, atol=1e-6, err_msg=key)
    _assert_updates_close(one[1], one[2], four[1], four[2])
    assert jax.tree.leaves(one[3]), "every tiny network here has batch norm"
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), one[3], four[3]
    )


def _sampled_loss_terms(configs, batch, seeds):
    """Mask R-CNN's loss terms after one training forward pass, for each config and each
    "sample" key, on 1 device; the configs differ only in sampling (same parameters)."""
    spec = models.build(configs[0])
    mesh = parallel.make_mesh(jax.devices()[:1])
    state = train.init_state(spec, optim.make_optimizer(configs[0].optim, 10), configs[0], mesh)
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    results = []
    for config in configs:
        spec = models.build(config)

        def forward(example, key, spec=spec):
            outputs, _ = spec.module.apply(
                variables,
                example["image"],
                example["label"],
                train=True,
                mutable=["batch_stats"],
                rngs={"sample": key},
            )
            return spec.loss(outputs, example)[0]

        # vmap over a device axis of 1 gives batch norm its axis, as the trainer's shard_map.
        run = jax.jit(jax.vmap(forward, in_axes=(0, None), axis_name=spec.axis_name))
        stacked = jax.tree.map(lambda x: x[None], batch)
        results.append([jax.device_get(run(stacked, jax.random.PRNGKey(s))) for s in seeds])
    return results


def test_mask_rcnn_sampling_takes_every_candidate(batch):
    """With take_every_candidate the loss does not depend on the sampling key; with the tiny
    config's own sample counts it does (so the comparison in test_four_devices_equal_one is
    not vacuous: the keys really differ between 1 and 4 devices and really matter)."""
    every, subsample = _sampled_loss_terms(
        [deterministic_config("mask_rcnn"), mask_rcnn.get_config("tiny")], batch, seeds=(0, 1)
    )
    a, b = every
    for key in a:
        assert float(a[key][1][0]) == float(b[key][1][0]) > 0, key
        np.testing.assert_allclose(a[key][0], b[key][0], rtol=1e-5, err_msg=key)
    a, b = subsample
    assert float(a["rpn_objectness"][0][0]) != float(b["rpn_objectness"][0][0])
    assert float(a["rpn_objectness"][1][0]) < float(every[0]["rpn_objectness"][1][0])
