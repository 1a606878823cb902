"""Mask R-CNN (He et al. 2017) on a feature pyramid, in pure JAX with every shape static.

  image (B, H, W, 3) -> backbone + FPN (nucjax.models.fpn) -> P2..P6
    -> RPN head (shared 3x3 conv, objectness and deltas for K anchors a cell) on every level
    -> proposals (nucjax.detection.proposals, per image, no gradient)
    -> box head on 7 x 7 ROI Align of P2..P5 (class logits: background, nucleus; deltas)
    -> mask head on 14 x 14 ROI Align (4 x conv3x3, x2 up -> 28 x 28 mask logits)

Training (train=True, `label` given, rng stream "sample"): ground truth comes from the label
image (nucjax.detection.targets.instance_boxes; ids > config.data.max_instances are dropped
and counted in the metric gt_dropped_pixels; label -1 reads as background), anchors and
proposals are matched and sampled, and the module returns its outputs together with the
targets it sampled, so `loss(outputs, batch)` is a pure function: five (sum, count) terms
(rpn_objectness, rpn_box, box_class, box_regression, mask) that the trainer divides by their
global counts. The box head sees all sampled ROIs; the mask head only the first
`mask_rois` slots, which hold every sampled positive (positives come first; see
nucjax.detection.sampling), in random order.

Inference (train=False): proposals -> box head -> score threshold, NMS and a static
max_detections (config.eval; decoding.box_head_detections) -> mask head on the detections.
Outputs (D = max_detections): boxes (B, D, 4), scores (B, D), valid (B, D), masks
(B, D, 28, 28) nucleus probabilities, and foreground (B, H, W): the maximum of the pasted
masks (what the trainer's pixel metrics read). The mask head and the pasting skip chunks of
empty detection slots, so their cost follows the number of nuclei, not max_detections.
postprocess() pastes the masks of one image into a non-overlapping label image, higher scores
first, and cleans it with config.eval as the per-pixel networks' post-processing does.
Whole images are predicted in overlapping tiles of config.eval.tile_size (nucjax.tiling,
tiling "detections": a detection is kept by the tile that owns its box centre), so proposals,
max_detections, time and memory are per tile, and every tile has one of a few fixed shapes.

Batch norm (backbone only) is trained and synchronised over the trainer's device axis; the
FPN and the heads have no normalisation (detectron2's defaults).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nucjax.detection import anchors as anchor_ops
from nucjax.detection import decoding, proposals, sampling, targets
from nucjax.detection import losses as det_losses
from nucjax.models import fpn, pretrained
from nucjax.models.layers import adapt_input, check_image_shape
from nucjax.models.mask_rcnn_heads import (
    BOX_POOL,
    MASK_POOL,
    BoxHead,
    MaskHead,
    RPNHead,
    foreground_map,
    masks_and_foreground,
    pool,
)
from nucjax.models.spec import Instances, ModelSpec
from nucjax.postprocess import clean_instances

ROI_LEVELS = 4  # ROI Align reads P2..P5; P6 serves the RPN only (as in detectron2)
# The config section of each DetectorSettings field that is not in config.model.
_CONFIG_SECTION = {
    "max_instances": "data",
    "score_threshold": "eval",
    "nms_threshold": "eval",
    "max_detections": "eval",
}


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """What the Mask R-CNN module computes with, read from the config once (`from_config`).

    Hashable, as a static module attribute must be. Every field is the config field of the
    same name (configs/mask_rcnn.py says what each means and why it has its value) and none has
    a default here, so the config is the one source of every value.
      config.model: the network (backbone .. mask_head_width), anchors (anchor_sizes: one side
        per pyramid level P2, P3, ..., whose number sets the levels), RPN and ROI sampling,
        proposals (train_top_k, test_top_k: pre-NMS per level, post-NMS per image) and
        mask_rois (training ROIs of the mask head; 0 = the positive cap);
      config.data: max_instances, the ground-truth slots per image;
      config.eval: score_threshold, nms_threshold, max_detections, which select the detections
        at inference (decoding.box_head_detections).
    """

    backbone: str
    depth: int
    width: int
    fpn_width: int
    fusion_walls: str
    input_adapter: str
    input_scale: int
    box_head_convs: int
    box_head_fcs: int
    box_head_width: int
    mask_head_convs: int
    mask_head_width: int
    anchor_sizes: tuple[float, ...]
    aspect_ratios: tuple[float, ...]
    rpn_samples: int
    rpn_positive_fraction: float
    train_top_k: tuple[int, int]
    test_top_k: tuple[int, int]
    rpn_nms_threshold: float
    roi_samples: int
    roi_positive_fraction: float
    mask_rois: int
    max_instances: int
    score_threshold: float
    nms_threshold: float
    max_detections: int

    @classmethod
    def from_config(cls, config) -> DetectorSettings:
        def value(name: str):
            found = config[_CONFIG_SECTION.get(name, "model")][name]
            return tuple(found) if isinstance(found, list | tuple) else found

        return cls(**{field.name: value(field.name) for field in dataclasses.fields(cls)})

    @property
    def strides(self) -> tuple[int, ...]:
        return fpn.level_strides(len(self.anchor_sizes))

    @property
    def mask_slots(self) -> int:
        cap = sampling.max_positives(self.roi_samples, self.roi_positive_fraction)
        return min(cap, self.mask_rois) if self.mask_rois > 0 else cap


class MaskRCNN(nn.Module):
    """image (B, H, W, 3), H and W multiples of 32; label (B, H, W) int32 when training.

    Returns the dict of outputs (and sampled targets) described in the module docstring.
    """

    settings: DetectorSettings
    axis_name: str | None = None

    @nn.compact
    def __call__(self, image: jax.Array, label: jax.Array | None = None, *, train: bool):
        check_image_shape(image.shape, fpn.STRIDE, "Mask R-CNN")
        s = self.settings
        if s.input_scale > 1:  # small nuclei reach the pyramid larger; outputs come back below
            image, label = upscale(image, label, s.input_scale)
        shape = tuple(int(d) for d in image.shape[1:3])
        backbone = fpn.backbone_module(
            s.backbone, s.depth, s.width, self.axis_name, fusion_walls=s.fusion_walls
        )
        pyramid = fpn.FPN(s.fpn_width, len(s.strides), name="fpn")(
            backbone(adapt_input(image, s.input_adapter), train=train)
        )
        anchors, counts = anchor_ops.multilevel_anchors(
            shape, s.strides, s.anchor_sizes, s.aspect_ratios
        )
        num_anchors = anchor_ops.anchors_per_location(s.aspect_ratios)
        rpn_logits, rpn_deltas = RPNHead(num_anchors, s.fpn_width, name="rpn")(pyramid)
        pre, post = s.train_top_k if train else s.test_top_k
        propose = functools.partial(
            proposals.generate_proposals,
            anchors,
            level_counts=counts,
            image_shape=shape,
            pre_nms_top_k=pre,
            post_nms_top_k=post,
            nms_threshold=s.rpn_nms_threshold,
        )
        rois, _, roi_valid = jax.vmap(propose)(rpn_logits, rpn_deltas)
        box_head = BoxHead(
            s.box_head_convs, s.box_head_fcs, s.box_head_width, s.fpn_width, name="box_head"
        )
        # The mask head is applied as a pure function of its parameters, so that inference can
        # run it inside lax.map / lax.cond (bound flax modules cannot enter jax transforms).
        mask_head = MaskHead(s.mask_head_convs, s.mask_head_width)
        init_masks = lambda key: mask_head.init(
            key, jnp.zeros((1, MASK_POOL, MASK_POOL, s.fpn_width))
        )["params"]
        mask_params = self.param("mask_head", init_masks)
        predict_masks = lambda features: mask_head.apply({"params": mask_params}, features)
        maps = pyramid[:ROI_LEVELS]
        if not train:
            found = _detect(s, shape, maps, rois, roi_valid, box_head, predict_masks)
            return downscale_outputs(found, s.input_scale)
        if label is None:
            raise ValueError("Mask R-CNN samples its targets from `label` when train=True")
        heads = (box_head, predict_masks)
        rpn = (anchors, rpn_logits, rpn_deltas)
        return _train(s, self.make_rng("sample"), label, rpn, rois, roi_valid, maps, heads)


def _train(s: DetectorSettings, key, label, rpn, rois, roi_valid, maps, heads):
    """Training outputs: sample targets from `label` (B, H, W), run the heads on the samples.

    rpn: (anchors (A, 4), logits (B, A), deltas (B, A, 4)); rois (B, P, 4) and roi_valid
    (B, P) the proposals; heads: (bound box head, mask head function).
    """
    anchors, rpn_logits, rpn_deltas = rpn
    box_head, predict_masks = heads
    gt_boxes, gt_valid = jax.vmap(lambda g: targets.instance_boxes(g, s.max_instances))(label)
    rpn_keys, roi_keys = jnp.split(jax.random.split(key, 2 * label.shape[0]), 2)
    rpn_t = jax.vmap(
        functools.partial(
            targets.rpn_targets,
            num_samples=s.rpn_samples,
            positive_fraction=s.rpn_positive_fraction,
        ),
        in_axes=(0, None, 0, 0),
    )(rpn_keys, anchors, gt_boxes, gt_valid)
    roi_t = jax.vmap(
        functools.partial(
            targets.roi_targets,
            num_samples=s.roi_samples,
            positive_fraction=s.roi_positive_fraction,
        )
    )(roi_keys, rois, roi_valid, gt_boxes, gt_valid)
    class_logits, box_deltas = box_head(pool(maps, roi_t.rois, BOX_POOL))
    mask_rois = roi_t.rois[:, : s.mask_slots]
    mask_gt = roi_t.gt_index[:, : s.mask_slots]
    mask_logits = predict_masks(pool(maps, mask_rois, MASK_POOL))
    return {
        "rpn": {"logits": rpn_logits, "deltas": rpn_deltas, "targets": rpn_t},
        "box": {"class_logits": class_logits, "deltas": box_deltas, "targets": roi_t},
        "mask": {
            "logits": mask_logits,
            "targets": jax.vmap(targets.mask_targets)(label, mask_rois, mask_gt),
            "positive": roi_t.positive[:, : s.mask_slots],
        },
        "gt_instances": jnp.sum(gt_valid, axis=1),
        "gt_dropped_pixels": jnp.sum(label > s.max_instances, axis=(1, 2)) // s.input_scale**2,
    }


def upscale(image: jax.Array, label: jax.Array | None, k: int):
    """image (B, H, W, C) bilinear and label (B, H, W) nearest, both k times larger."""
    b, h, w, c = image.shape
    image = jax.image.resize(image, (b, k * h, k * w, c), "bilinear")
    if label is not None:
        label = jnp.repeat(jnp.repeat(label, k, axis=1), k, axis=2)
    return image, label


def downscale_outputs(found: dict, k: int) -> dict:
    """Inference outputs of a k-times upscaled image, back in the input's pixels: boxes / k,
    the foreground map averaged over k x k blocks; masks are box-relative and stay."""
    if k == 1:
        return found
    b, h, w = found["foreground"].shape
    foreground = found["foreground"].reshape(b, h // k, k, w // k, k).mean(axis=(2, 4))
    return {**found, "boxes": found["boxes"] / k, "foreground": foreground}


def _detect(s: DetectorSettings, shape, maps, rois, roi_valid, box_head, predict_masks):
    """Inference from proposals (B, P, 4) to the outputs dict (module docstring)."""
    class_logits, box_deltas = box_head(pool(maps, rois, BOX_POOL))
    detect = functools.partial(
        decoding.box_head_detections,
        image_shape=shape,
        score_threshold=s.score_threshold,
        iou_threshold=s.nms_threshold,
        max_detections=s.max_detections,
    )
    found = jax.vmap(detect)(rois, roi_valid, class_logits, box_deltas)
    masks, foreground = masks_and_foreground(maps, found.boxes, found.valid, predict_masks, shape)
    return {
        "boxes": found.boxes,
        "scores": found.scores,
        "valid": found.valid,
        "masks": masks,
        "foreground": foreground,
    }


def mask_rcnn_loss(outputs, batch):
    """(training outputs, batch) -> (five loss terms, metrics), each {name: (sum, count)}.

    Per-image terms are weighted by batch["valid"], so padding examples count nowhere.
    """
    weight = jnp.asarray(batch["valid"], jnp.float32)
    rpn, box, mask = outputs["rpn"], outputs["box"], outputs["mask"]
    rt, bt = rpn["targets"], box["targets"]
    per_image = {
        "rpn_objectness": jax.vmap(det_losses.rpn_objectness_loss)(
            rpn["logits"], rt.objectness, rt.sampled
        ),
        "rpn_box": jax.vmap(det_losses.rpn_box_loss)(
            rpn["deltas"], rt.deltas, rt.positive, rt.sampled
        ),
        "box_class": jax.vmap(det_losses.box_classification_loss)(
            box["class_logits"], bt.classes, bt.valid
        ),
        "box_regression": jax.vmap(det_losses.box_regression_loss)(
            box["deltas"], bt.deltas, bt.positive, bt.valid
        ),
        "mask": jax.vmap(det_losses.mask_loss)(mask["logits"], mask["targets"], mask["positive"]),
    }
    total = lambda x: jnp.sum(jnp.asarray(x, jnp.float32) * weight)
    terms = {k: (total(s), total(c)) for k, (s, c) in per_image.items()}
    correct = (jnp.argmax(box["class_logits"], axis=-1) == bt.classes) & bt.valid
    labelled = jnp.sum(batch["label"] >= 0, axis=(1, 2))
    metrics = {
        "roi_accuracy": (total(jnp.sum(correct, axis=1)), total(jnp.sum(bt.valid, axis=1))),
        "positive_rois": (total(jnp.sum(bt.positive, axis=1)), jnp.sum(weight)),
        "gt_instances": (total(outputs["gt_instances"]), jnp.sum(weight)),
        "gt_dropped_pixels": (total(outputs["gt_dropped_pixels"]), total(labelled)),
    }
    return terms, metrics


def foreground(outputs) -> jax.Array:
    """Eval outputs -> (B, H, W) foreground probability (the pasted masks' maximum)."""
    return outputs["foreground"]


def postprocess(outputs, *, eval_config) -> Instances:
    """Eval outputs of one image (numpy, no batch axis) -> non-overlapping Instances.

    Every pixel goes to the highest-scoring detection whose mask probability there is >=
    eval_config.mask_threshold; detections left without a pixel are dropped. Then, as for the
    per-pixel networks, clean_instances fills holes (eval_config.fill_holes, max_hole_size)
    and drops nuclei under eval_config.min_size pixels; scores follow their nuclei.
    """
    label, scores = decoding.instances_from_detections(
        np.asarray(outputs["masks"]),
        np.asarray(outputs["boxes"]),
        np.asarray(outputs["scores"]),
        np.asarray(outputs["valid"]),
        np.shape(outputs["foreground"]),
        eval_config.mask_threshold,
    )
    cleaned = clean_instances(
        label, eval_config.min_size, eval_config.fill_holes, eval_config.max_hole_size
    )
    return Instances(label=cleaned, scores=_scores_after_cleaning(label, cleaned, scores))


def _scores_after_cleaning(label: np.ndarray, cleaned: np.ndarray, scores: np.ndarray):
    """Scores (K,) of `label`'s ids 1..K -> scores of `cleaned`'s ids (clean_instances of it).

    Cleaning removes whole nuclei and fills holes, so every kept nucleus still covers pixels
    of its old id: one such pixel tells which old id became which new one.
    """
    old_id = np.zeros(int(cleaned.max(initial=0)) + 1, np.int64)
    both = (cleaned > 0) & (label > 0)
    old_id[cleaned[both]] = label[both]
    return np.asarray(scores, np.float32)[old_id[1:] - 1]


def build(config, *, axis_name: str | None) -> ModelSpec:
    """The ModelSpec of Mask R-CNN under `config` (registry entry `mask_rcnn`).

    Batch norm (backbone only) synchronises over `axis_name` in training.
    """
    return ModelSpec(
        module=MaskRCNN(settings=DetectorSettings.from_config(config), axis_name=axis_name),
        loss=mask_rcnn_loss,
        foreground=foreground,
        postprocess=functools.partial(postprocess, eval_config=config.eval),
        stride=fpn.STRIDE,
        axis_name=axis_name,
        prepare_variables=functools.partial(pretrained.maybe_load_pretrained, config),
        frozen=pretrained.backbone_mask,
        tiling="detections",
    )


__all__ = [
    "BoxHead",
    "DetectorSettings",
    "MaskHead",
    "MaskRCNN",
    "RPNHead",
    "build",
    "foreground",
    "foreground_map",
    "mask_rcnn_loss",
    "postprocess",
]
