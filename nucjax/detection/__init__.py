"""Pure jax.numpy detection ops for Mask R-CNN, in the style of TF Model Garden official/vision.

Conventions shared by every module here:
  boxes: float32 [y0, x0, y1, x1] in pixel coordinates of the (padded) input image, continuous
    coordinates where pixel (i, j) covers [i, i+1) x [j, j+1): the box of a mask whose rows are
    y0..y1-1 and columns x0..x1-1 is [y0, x0, y1, x1].
  Every shape is static: variable-length sets (ground truth, proposals, detections) are padded to
    a fixed size and carry a `valid` bool mask. Every function works under jax.jit and, one image
    at a time, under jax.vmap over a batch.
  Randomness only through explicit PRNG keys.

Modules: boxes, anchors, box_coding, matching, sampling, nms, roi_align, targets, losses,
proposals (RPN -> proposals) and decoding (box-head outputs -> detections; masks pasted into
non-overlapping instances).
"""
