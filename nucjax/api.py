"""nucjax from Python: load a trained model, segment numpy images.

  import nucjax
  model = nucjax.load("runs/unet")             # a training workdir, or a bundle (nucjax export)
  labels, info = model.segment(image)          # (H, W) int32: 0 background, 1..N one per nucleus
  info["scores"][k - 1]                        # the confidence of nucleus k
  for path, labels, info in model.segment_many(["images/", "extra.tif"]):
      ...                                      # files and folders, with a progress bar

`image`: a 2-D numpy array, grey (H, W), (H, W, 1), grey + alpha, RGB or RGBA; uint8, uint16,
float or bool; any size (tiled). The steps are nucjax.predict's (image_io.check_image, to_rgb,
predict.segment), so an image gives the same labels here as in `nucjax predict`. No TensorFlow
is imported.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from absl import logging

from nucjax import image_io, predict, reporting, workdir
from nucjax.data.images import to_rgb


class Result(NamedTuple):
    """One image of Model.segment_many: its file, labels (H, W) int32 and info (see segment)."""

    path: str
    labels: np.ndarray
    info: dict[str, Any]


def _labels_and_info(prediction) -> tuple[np.ndarray, dict[str, Any]]:
    """A whole_image.ImagePrediction -> segment's (labels, info)."""
    nuclei = prediction.instances
    info = {
        "scores": nuclei.scores,  # (N,) float32: nucleus k's is scores[k - 1]
        "num_nuclei": len(nuclei.scores),
        "foreground": prediction.foreground,  # (H, W) float32 probability of nucleus
        "scale": prediction.scale,  # config.eval.nucleus_area's resize (1.0: none)
        "seconds": prediction.predict_s + prediction.postprocess_s,
    }
    return nuclei.label, info


class Model:
    """A trained network ready to segment images (nucjax.load).

    config: the resolved config (config.eval holds the post-processing settings);
    step: the checkpoint step; source: the workdir or bundle it came from.
    """

    def __init__(self, trained: workdir.TrainedModel, source: str):
        self.trained = trained
        self.source = source

    @property
    def config(self):
        return self.trained.config

    @property
    def step(self) -> int:
        return self.trained.step

    def __repr__(self) -> str:
        name = self.config.model.name
        return f"nucjax.Model({name}, step {self.step}, from {self.source!r})"

    def segment(self, image: np.ndarray | str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
        """One image -> (labels, info).

        image: a numpy array (module docstring) or an image file's path.
        labels: (H, W) int32, 0 background, 1..N one id per nucleus.
        info: "scores" (N,) float32 per-nucleus confidence (nucleus k: scores[k - 1]),
        "num_nuclei" N, "foreground" (H, W) float32 probability, "scale", "seconds".
        Raises image_io.UnsupportedImageError (a ValueError) for an array that is not one
        2-D image.
        """
        if isinstance(image, str | os.PathLike):
            raw = image_io.read_image(os.fspath(image))
        else:
            raw = image_io.check_image(image, "image")
        return _labels_and_info(predict.segment(self.trained, to_rgb(raw)))

    def segment_many(
        self, paths: str | os.PathLike | Sequence[str | os.PathLike]
    ) -> Iterator[Result]:
        """Image files and folders of them (not recursive) -> a Result per image, in order,
        with a progress bar. A file that is not a usable image is skipped with a warning.
        As in `nucjax predict` (predict.segment_each), the network runs on the next image
        while this one is post-processed, so files are read one image ahead."""
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        files, _, unusable = image_io.gather_inputs([os.fspath(p) for p in paths])
        for item in unusable:  # broken links, subfolders
            logging.warning("skipped %s: %s", item["file"], item["reason"])
        bar = reporting.progress(len(files), "segment", "img")
        read = collections.deque()  # the paths of the images sent on, oldest first

        def images():
            for path in files:
                bar.update()
                try:
                    raw = image_io.read_image(path)
                except image_io.UnsupportedImageError as e:
                    logging.warning("skipped %s", e)
                    continue
                read.append(path)
                yield to_rgb(raw)

        try:
            for prediction in predict.segment_each(self.trained, images()):
                yield Result(read.popleft(), *_labels_and_info(prediction))
        finally:
            bar.close()


def load(path: str | os.PathLike, config=None, step: int | None = None) -> Model:
    """The trained model of a workdir or a model bundle file (nucjax.workdir.load).

    config: None for the one the run saved, or one that builds the same network (to change
    config.eval post-processing); step: a checkpoint step of a workdir (default latest).
    """
    path = os.fspath(path)
    return Model(workdir.load(path, config, step), path)


__all__ = ["Model", "Result", "load"]
