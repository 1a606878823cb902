"""Mask R-CNN (nucjax.models.mask_rcnn): static shapes, losses, one compilation, training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mask_rcnn as mask_rcnn_config
from nucjax import evaluate, evaluators, metrics, models, parallel, tiling, train, whole_image
from nucjax.data.images import normalize_image
from nucjax.data.synthetic import synthetic_example
from nucjax.detection import anchors, decoding
from nucjax.models import fpn, layers, mask_rcnn, mask_rcnn_heads
from tests.test_reporting import event_images
from tests.trained import random_model, synthetic_image

OVERFIT_STEPS = 300


def tiny_config():
    return mask_rcnn_config.get_config("tiny")


def eval_config(min_size: int = 0, fill_holes: bool = False):
    """The tiny config's post-processing settings, by default without any cleaning."""
    ev = tiny_config().eval
    ev.min_size, ev.fill_holes = min_size, fill_holes
    return ev


def synthetic_batch(seed: int, count: int, size: int = 64, **nuclei) -> dict[str, np.ndarray]:
    """`count` normalised synthetic images and their labels, as the trainer's host batches."""
    rng = np.random.default_rng(seed)
    pairs = [synthetic_example(rng, size, **nuclei) for _ in range(count)]
    return {
        "image": np.stack([normalize_image(image) for image, _ in pairs]),
        "label": np.stack([label for _, label in pairs]).astype(np.int32),
        "valid": np.ones(count, np.float32),
    }


def test_pyramid_levels_halve_for_both_backbones():
    image = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)
    for kind in ("light", "resnet"):
        backbone = fpn.backbone_module(kind, 18, 8, None)
        pyramid = fpn.FPN(16, 5)

        def run(x, backbone=backbone, pyramid=pyramid):
            stages, _ = backbone.init_with_output(jax.random.key(0), x, train=False)
            return pyramid.init_with_output(jax.random.key(0), stages)[0]

        shapes = [p.shape for p in jax.eval_shape(run, image)]
        # P6 of a 64-pixel side is ceil(64 / 64) = 1, as anchors.feature_shapes counts it.
        grid = anchors.feature_shapes((64, 96), fpn.level_strides(5))
        assert shapes == [(2, h, w, 16) for h, w in grid], kind
    with pytest.raises(ValueError, match="multiples of 32"):
        layers.check_image_shape((1, 48, 64, 3), fpn.STRIDE, "Mask R-CNN")


def test_training_outputs_and_targets_have_static_shapes():
    config = tiny_config()
    spec = models.build(config)
    module = spec.module.clone(axis_name=None)
    s = module.settings
    batch = synthetic_batch(0, 2)
    variables = jax.eval_shape(
        lambda: module.init(jax.random.key(0), batch["image"], batch["label"], train=False)
    )
    out = jax.eval_shape(
        lambda v: module.apply(
            v,
            batch["image"],
            batch["label"],
            train=True,
            mutable=["batch_stats"],
            rngs={"sample": jax.random.key(1)},
        )[0],
        variables,
    )
    num_anchors = anchors.multilevel_anchors((64, 64), s.strides, s.anchor_sizes, s.aspect_ratios)[
        0
    ].shape[0]
    assert num_anchors == 3 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)
    assert out["rpn"]["logits"].shape == (2, num_anchors)
    assert out["rpn"]["deltas"].shape == (2, num_anchors, 4)
    assert out["rpn"]["targets"].sampled.shape == (2, num_anchors)
    assert out["box"]["class_logits"].shape == (2, s.roi_samples, 2)
    assert out["box"]["deltas"].shape == (2, s.roi_samples, 4)
    assert out["box"]["targets"].rois.shape == (2, s.roi_samples, 4)
    assert s.mask_slots == config.model.mask_rois == 16
    assert (s.max_detections, s.max_instances) == (config.eval.max_detections, 64)
    assert out["mask"]["logits"].shape == (2, 16, 28, 28)
    assert out["mask"]["targets"].shape == (2, 16, 28, 28)
    assert out["mask"]["positive"].shape == (2, 16)
    assert set(variables["params"]) == {"backbone", "fpn", "rpn", "box_head", "mask_head"}


@pytest.fixture(scope="module")
def overfit():
    """A tiny Mask R-CNN trained on four 64 x 64 synthetic images with touching nuclei."""
    config = tiny_config()
    m = config.model
    m.width, m.fpn_width, m.box_head_width, m.mask_head_width = 16, 32, 128, 32
    spec = models.build(config)
    mesh = parallel.make_mesh(jax.devices()[:1])
    tx = optax.adam(optax.cosine_decay_schedule(3e-3, OVERFIT_STEPS))
    state = train.init_state(spec, tx, config, mesh)
    step = train.make_train_step(spec, tx, mesh)
    batch = synthetic_batch(0, 4, radius=6.0, num_nuclei=8)
    data = parallel.shard_batch(batch, mesh)
    history = []
    for _ in range(OVERFIT_STEPS):
        state, sums = step(state, data)
        history.append(sums)
    history = [train.means(sums) for sums in history]
    outputs = jax.device_get(
        jax.jit(lambda v, x: spec.module.apply(v, x, train=False))(state.variables, batch["image"])
    )
    return dict(
        spec=spec, mesh=mesh, step=step, state=state, batch=batch, history=history, outputs=outputs
    )


def test_loss_terms_start_at_log2_and_fall_within_20_steps(overfit):
    history = overfit["history"]
    first = history[0]
    assert set(first) >= {"loss", "rpn_objectness", "rpn_box", "box_class", "box_regression"}
    # Near-zero initial logits: each binary cross-entropy, averaged by its count, is log 2.
    np.testing.assert_allclose(first["rpn_objectness"], np.log(2), atol=0.02)
    np.testing.assert_allclose(first["mask"], np.log(2), atol=0.02)
    np.testing.assert_allclose(first["box_class"], np.log(2), atol=0.1)
    losses = [h["loss"] for h in history[:20]]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.75 * losses[0], losses


def test_overfits_a_few_synthetic_images_to_dsb_score_above_08(overfit):
    batch, outputs, spec = overfit["batch"], overfit["outputs"], overfit["spec"]
    preds = [
        spec.postprocess(jax.tree.map(lambda x, i=i: x[i], outputs)).label
        for i in range(len(batch["label"]))
    ]
    score = metrics.dsb_score(list(batch["label"]), preds)
    assert score > 0.8, (score, [int(p.max()) for p in preds])


def test_eval_outputs_and_postprocess_give_non_overlapping_instances(overfit):
    outputs, spec = overfit["outputs"], overfit["spec"]
    d = spec.module.settings.max_detections
    assert outputs["boxes"].shape == (4, d, 4)
    assert outputs["scores"].shape == outputs["valid"].shape == (4, d)
    assert outputs["masks"].shape == (4, d, 28, 28)
    assert outputs["foreground"].shape == (4, 64, 64)
    assert np.all((outputs["foreground"] >= 0) & (outputs["foreground"] <= 1))
    valid = outputs["valid"]
    assert np.all(outputs["scores"][valid] > spec.module.settings.score_threshold)
    one = jax.tree.map(lambda x: x[0], outputs)
    instances = mask_rcnn.postprocess(one, eval_config=eval_config())
    k = len(instances.scores)
    assert instances.label.shape == (64, 64) and k > 0
    assert set(np.unique(instances.label)) == set(range(k + 1))
    assert np.all(np.diff(instances.scores) <= 0)  # ids in descending score order
    # Uncleaned, the label image is the foreground map thresholded, split between detections.
    np.testing.assert_array_equal(instances.label > 0, one["foreground"] >= 0.5)


def test_postprocess_gives_an_overlap_to_the_higher_score():
    masks = np.ones((3, 28, 28), np.float32)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 16, 16]], np.float32)
    outputs = {
        "masks": masks,
        "boxes": boxes,
        "scores": np.array([0.6, 0.9, 0.99], np.float32),
        "valid": np.array([True, True, False]),
        "foreground": np.zeros((16, 16), np.float32),
    }
    instances = mask_rcnn.postprocess(outputs, eval_config=eval_config())
    want = np.zeros((16, 16), np.int32)
    want[0:10, 0:10] = 2
    want[5:15, 5:15] = 1  # score 0.9 takes the overlap and gets id 1
    np.testing.assert_array_equal(instances.label, want)
    np.testing.assert_allclose(instances.scores, [0.9, 0.6])


def test_postprocess_fills_holes_drops_small_nuclei_and_keeps_their_scores():
    masks = np.ones((3, 28, 28), np.float32)
    masks[0, 10:18, 10:18] = 0.0  # a hole in the middle of nucleus 0
    boxes = np.array([[0, 0, 12, 12], [20, 20, 23, 23], [0, 20, 10, 30]], np.float32)
    outputs = {
        "masks": masks,
        "boxes": boxes,
        "scores": np.array([0.9, 0.95, 0.5], np.float32),  # the 9-pixel nucleus scores best
        "valid": np.ones(3, bool),
        "foreground": np.zeros((32, 32), np.float32),
    }
    raw = mask_rcnn.postprocess(outputs, eval_config=eval_config())
    np.testing.assert_allclose(raw.scores, [0.95, 0.9, 0.5])
    assert raw.label[6, 6] == 0 and raw.label[21, 21] == 1
    cleaned = mask_rcnn.postprocess(outputs, eval_config=eval_config(10, fill_holes=True))
    np.testing.assert_allclose(cleaned.scores, [0.9, 0.5])  # ids 1, 2: nuclei 0 and 2
    assert cleaned.label[6, 6] == 1 and cleaned.label[21, 21] == 0
    np.testing.assert_array_equal(cleaned.label[raw.label == 3], 2)


def test_foreground_map_is_the_maximum_of_the_pasted_masks():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(7, 28, 28)).astype(np.float32)
    corner = rng.uniform(0, 24, (7, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(3, 16, (7, 2))], 1).astype(np.float32)
    valid = np.array([1, 1, 0, 1, 1, 1, 0], bool)
    got = jax.jit(lambda *a: mask_rcnn.foreground_map(*a, (32, 40), chunk=3))(masks, boxes, valid)
    want = np.max(np.asarray(decoding.paste_masks(masks, boxes, valid, (32, 40))), axis=0)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_chunked_inference_masks_equal_the_direct_computation():
    rng = np.random.default_rng(1)
    maps = [rng.normal(size=(2, 16 // 2**i, 16 // 2**i, 3)).astype(np.float32) for i in range(4)]
    corner = rng.uniform(0, 48, (2, 10, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(4, 30, (2, 10, 2))], -1)
    boxes = boxes.astype(np.float32)
    valid = np.arange(10)[None, :] < np.array([[6], [0]])  # valid first; image 1 has none
    predict = lambda f: jnp.repeat(jnp.repeat(f.mean(-1), 2, axis=-1), 2, axis=-2)
    masks, fg = jax.jit(
        lambda m, b, v: mask_rcnn_heads.masks_and_foreground(m, b, v, predict, (64, 64), chunk=4)
    )(maps, boxes, valid)
    want = jax.nn.sigmoid(predict(mask_rcnn_heads.pool(maps, boxes, 14)))
    want = np.where(valid[..., None, None], want, 0.0)
    np.testing.assert_allclose(masks, want, atol=1e-6)
    paste = jax.vmap(lambda m, b, v: mask_rcnn.foreground_map(m, b, v, (64, 64)))
    np.testing.assert_allclose(fg, paste(want, boxes, valid), atol=1e-6)
    np.testing.assert_array_equal(fg[1], 0.0)


def test_train_step_compiles_once_for_any_number_of_nuclei(overfit):
    step, mesh = overfit["step"], overfit["mesh"]
    state = jax.tree.map(jnp.copy, overfit["state"])  # the step donates its input state
    crowded = synthetic_batch(1, 4, radius=3.0, num_nuclei=40)
    empty = synthetic_batch(2, 4, num_nuclei=1)
    empty["label"][:] = 0
    empty["label"][1, :, 40:] = -1  # unlabelled pixels read as background
    for batch in (crowded, empty, overfit["batch"]):
        state, sums = step(state, parallel.shard_batch(batch, mesh))
        scalars = train.means(sums)
        assert all(np.isfinite(v) for v in scalars.values()), scalars
        if batch is empty:
            host = jax.device_get(sums)
            assert float(host["gt_instances"][0]) == 0
            assert float(host["mask"][1]) == 0  # no positive ROI: no mask pixels counted
            assert float(host["box_regression"][0]) == 0
            assert float(host["rpn_objectness"][1]) > 0  # negatives are still sampled
    assert step._cache_size() == 1


def test_trainer_runs_the_tiny_config_on_four_devices(tmp_path):
    config = tiny_config()
    assert len(jax.devices()) == 4 and config.train.batch_size == 4
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["steps"] == 2 and summary["devices"] == 4
    final = summary["final_eval"]["validation"]
    # Restored from the workdir alone (its saved config, tuples read back from JSON), the
    # evaluate path scores the checkpoint exactly as the trainer did.
    report = evaluate.evaluate(None, str(tmp_path))
    after = evaluators.scalars(report)
    assert final["num_images"] == report["metrics"]["num_images"]
    assert {k: final[k] for k in after} == after
    images = event_images(str(tmp_path))
    assert sorted(images) == [f"eval_validation/outlines/{i}" for i in range(3)]
    assert images["eval_validation/outlines/0"][0][1].shape == (64, 132, 3)


def test_input_scale_runs_the_network_on_a_larger_image_and_answers_in_input_pixels():
    """model.input_scale = 2: the backbone sees a 2x image (and 2x labels in training); the
    boxes and foreground map come back in the input's pixels."""
    image = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    label = np.arange(2 * 4 * 6, dtype=np.int32).reshape(2, 4, 6)
    big, big_label = mask_rcnn.upscale(jnp.asarray(image), jnp.asarray(label), 2)
    assert big.shape == (2, 8, 12, 3)
    np.testing.assert_array_equal(big_label[:, ::2, ::2], label)
    np.testing.assert_array_equal(big_label[:, 1::2, 1::2], label)
    found = {"boxes": jnp.full((2, 3, 4), 8.0), "foreground": big[..., 0], "scores": 1}
    back = mask_rcnn.downscale_outputs(found, 2)
    np.testing.assert_allclose(back["boxes"], 4.0)
    want = np.asarray(big[..., 0]).reshape(2, 4, 2, 6, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(back["foreground"], want, rtol=1e-6)
    config = tiny_config()
    config.model.input_scale = 2
    spec = models.build(config)
    batch = synthetic_batch(0, 1)
    shapes = jax.eval_shape(
        lambda: spec.module.init_with_output(
            {"params": jax.random.key(0), "dropout": jax.random.key(0)}, batch["image"], train=False
        )[0]
    )
    assert shapes["foreground"].shape == (1, 64, 64) and shapes["boxes"].shape[-1] == 4


def test_whole_images_of_new_sizes_reuse_the_compiled_tile_shapes():
    """Tiled whole-image inference: 64 x 64 tiles (the tiny config's tile_size), one at a time
    for images of one tile, four at a time otherwise and the rest one at a time, so four image
    sizes compile twice."""
    config = tiny_config()
    spec, variables = random_model(config, seed=3)
    before = whole_image._apply._cache_size()
    for (h, w), tiles in (((40, 50), 1), ((64, 33), 1), ((100, 70), 6), ((150, 97), 12)):
        rows, cols, shape = tiling.tile_grid(h, w, 32, 64, 16)
        assert (len(rows) * len(cols), shape) == (tiles, (64, 64))
        image, _ = synthetic_image((h, w), seed=h)
        p = whole_image.segment_image(spec, variables, image, config.eval)
        assert p.instances.label.shape == p.foreground.shape == (h, w)
        assert len(p.instances.scores) == p.instances.label.max()
    assert whole_image._apply._cache_size() - before == 2
