"""Each loss by hand on tiny inputs, zero positives, padding garbage, jit and gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from nucjax.detection import losses

rpn_box_loss = jax.jit(losses.rpn_box_loss, static_argnums=4)
box_regression_loss = jax.jit(losses.box_regression_loss, static_argnums=4)
box_classification_loss = jax.jit(losses.box_classification_loss)
mask_loss = jax.jit(losses.mask_loss)


def log1pexp(x):
    return np.log1p(np.exp(x))


def test_rpn_objectness_by_hand():
    logits = np.array([0.0, 2.0, -1.0, 50.0], np.float32)
    target = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    sampled = np.array([True, True, False, True])
    total, count = jax.jit(losses.rpn_objectness_loss)(logits, target, sampled)
    np.testing.assert_allclose(total, np.log(2) + log1pexp(2.0) + log1pexp(-50.0), rtol=1e-6)
    assert count == 3


def test_box_losses_by_hand_and_normalisers():
    pred = np.array([[0.5, -1.0, 0.0, 2.0], [9.0, 9.0, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0]])
    target = np.array([[0.0, 0.0, 0.0, 0.0], [np.inf, 0, 0, 0], [0.0, 0.0, 0.0, 0.0]])
    positive = np.array([True, False, False])
    sampled = np.array([True, True, False])
    total, count = rpn_box_loss(pred, target, positive, sampled, 0.0)  # L1
    np.testing.assert_allclose(total, 3.5)
    assert count == 2  # divided by sampled anchors, not positives
    total, count = box_regression_loss(pred, target, positive, sampled, 1.0)
    np.testing.assert_allclose(total, 0.5 * 0.25 + 0.5 + 0.0 + 1.5)  # smooth L1, beta 1
    assert count == 2


def test_box_classification_by_hand():
    logits = np.array([[0.0, 0.0], [2.0, 0.0], [5.0, -5.0]], np.float32)
    classes = np.array([1, 0, 7])  # the padded slot holds a garbage class
    valid = np.array([True, True, False])
    total, count = box_classification_loss(logits, classes, valid)
    np.testing.assert_allclose(total, np.log(2) + log1pexp(-2.0), rtol=1e-6)
    assert count == 2


def test_mask_loss_by_hand():
    logits = np.zeros((3, 2, 2), np.float32)
    logits[0, 0, 0] = 3.0
    targets = np.ones((3, 2, 2), np.float32)
    positive = np.array([True, False, True])
    total, count = mask_loss(logits, targets, positive)
    np.testing.assert_allclose(total, log1pexp(-3.0) + 7 * np.log(2), rtol=1e-6)
    assert count == 2 * 2 * 2  # positive ROIs * M * M


def test_zero_positives_and_zero_samples_are_finite():
    a = np.zeros((5, 4), np.float32)
    none = np.zeros(5, bool)
    pairs = [
        jax.jit(losses.rpn_objectness_loss)(np.zeros(5), np.zeros(5), none),
        rpn_box_loss(a, a, none, np.ones(5, bool), 0.0),
        box_classification_loss(np.zeros((5, 2)), np.zeros(5, int), none),
        box_regression_loss(a, a, none, none, 0.0),
        mask_loss(np.zeros((5, 3, 3)), np.zeros((5, 3, 3)), none),
    ]
    for total, count in pairs:
        assert float(total) == 0.0 and np.isfinite(float(total))
        assert float(total) / max(float(count), 1.0) == 0.0

    def objective(pred):
        total, count = losses.mask_loss(pred, jnp.zeros((5, 3, 3)), none)
        return total / jnp.maximum(count, 1.0)

    grad = jax.jit(jax.grad(objective))(jnp.zeros((5, 3, 3)))
    assert np.all(np.isfinite(grad)) and np.all(grad == 0)


def test_smooth_l1_gradient_finite_at_zero_with_beta_zero():
    grad = jax.grad(lambda x: losses.smooth_l1(x, 0.0).sum())(jnp.array([0.0, 1.0, -2.0]))
    assert np.all(np.isfinite(grad))
