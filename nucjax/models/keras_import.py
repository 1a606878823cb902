"""Convert Keras ResNet v1 models into nucjax backbone checkpoints.

  python -m nucjax.models.keras_import --depth=152 --out=pretrained/resnet152
  python -m nucjax.models.keras_import --depth=50 --out=DIR --weights=PATH.weights.h5

--weights=imagenet (the default) lets Keras download its ImageNet weights (needs internet);
PATH is a Keras weights file (.weights.h5, or the legacy .h5 that keras.applications
downloads) or a whole saved model (.keras). The output is an orbax checkpoint of
{"params", "batch_stats"} for `ResNetBackbone` (nucjax.models.resnet) in the format of
nucjax.models.pretrained. Setting `config.model.pretrained=DIR` makes the trainer load it into
the model's `backbone` subtree (pretrained.maybe_load_pretrained); the head stays freshly
initialised.

Keras and TensorFlow are imported only inside the conversion functions: importing this module
costs neither.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping

import jax
import numpy as np
from flax import traverse_util

from nucjax.checkpoint import array_checksums
from nucjax.models import resnet
from nucjax.models.pretrained import (
    FORMAT,
    PretrainedMismatch,
    as_dict,
    flat,
    keras_layer_name,
    num_scalars,
)

KERAS_DEPTHS = (50, 101, 152)
# flax leaf name -> index into Keras get_weights(), for Conv2D and for BatchNormalization
# ([gamma, beta, moving_mean, moving_variance]); both layouts are the same as flax's.
_CONV_INDEX = {"kernel": 0, "bias": 1}
_BN_INDEX = {"scale": 0, "bias": 1, "mean": 2, "var": 3}


def backbone_shapes(depth: int, width: int = 64) -> dict[str, dict]:
    """{"params", "batch_stats"} of ResNetBackbone(depth, width) as ShapeDtypeStructs."""
    module = resnet.ResNetBackbone(depth=depth, width=width)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
    return {"params": shapes["params"], "batch_stats": shapes["batch_stats"]}


# ----------------------------------------------------------------------------- Keras side


def keras_resnet(depth: int, weights: str | None = None):
    """keras.applications.ResNet{depth}(include_top=False) with `weights`.

    weights: None (random), "imagenet" (downloaded by Keras), a weights file (.weights.h5 or
    legacy .h5) or a saved model (.keras, whose own architecture is returned).
    """
    import keras

    if depth not in KERAS_DEPTHS:
        raise ValueError(f"Keras has ResNet v1 weights for depths {KERAS_DEPTHS}, not {depth}")
    if weights and weights.endswith(".keras"):
        return keras.models.load_model(weights, compile=False)
    build = getattr(keras.applications, f"ResNet{depth}")
    if weights == "imagenet":
        return build(include_top=False, weights="imagenet", input_shape=(None, None, 3))
    model = build(include_top=False, weights=None, input_shape=(None, None, 3))
    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"Keras weights file {weights} does not exist")
        try:
            model.load_weights(weights)
        except Exception as e:  # Keras raises many types; say which file and which depth
            raise PretrainedMismatch(
                f"cannot load Keras weights {weights} into keras.applications.ResNet{depth}: "
                f"{type(e).__name__}: {e}"
            ) from e
    return model


def _keras_weights(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def infer_depth(layer_names) -> int:
    """The ResNet depth whose blocks (kind and count per stage) `layer_names` show."""
    blocks, kind = [0, 0, 0, 0], "basic"
    for name in layer_names:
        m = re.match(r"conv([2-5])_block(\d+)_(\d)", name)
        if m:
            stage = int(m.group(1)) - 2
            blocks[stage] = max(blocks[stage], int(m.group(2)))
            kind = "bottleneck" if m.group(3) == "3" else kind
    for depth, stages in resnet.STAGES.items():
        if stages == (kind, tuple(blocks)):
            return depth
    raise PretrainedMismatch(
        f"{kind} blocks per stage {blocks} match no ResNet depth of {resnet.STAGES}"
    )


def variables_from_keras(model) -> dict[str, dict]:
    """A Keras ResNet v1 (include_top any) -> {"params", "batch_stats"} of ResNetBackbone.

    Every backbone leaf must be found with its exact shape and every Keras layer with weights
    must be used (the classifier `predictions` of include_top=True excepted), else
    PretrainedMismatch names the layer.
    """
    weights = _keras_weights(model)
    weights.pop("predictions", None)
    depth = infer_depth(weights)
    width = int(weights["conv1_conv"][0].shape[-1])
    shapes = backbone_shapes(depth, width)
    out, used = {}, set()
    for collection, tree in shapes.items():
        leaves = {}
        for path, shape in flat(tree).items():
            layer = keras_layer_name(path[:-1])
            if layer not in weights:
                raise PretrainedMismatch(f"Keras model has no layer {layer} (ResNet-{depth})")
            arrays = weights[layer]
            index = (_BN_INDEX if len(arrays) == 4 else _CONV_INDEX).get(path[-1])
            if index is None or index >= len(arrays):
                raise PretrainedMismatch(
                    f"Keras layer {layer} has {len(arrays)} weights; {'/'.join(path)} fits none"
                )
            value = np.asarray(arrays[index], np.float32)
            if value.shape != shape.shape:
                raise PretrainedMismatch(
                    f"Keras layer {layer} weight {index} has shape {value.shape}; "
                    f"{'/'.join(path)} needs {shape.shape}"
                )
            leaves[path] = value
            used.add(layer)
        out[collection] = traverse_util.unflatten_dict(leaves)
    unused = sorted(set(weights) - used)
    if unused:
        raise PretrainedMismatch(f"Keras layers not mapped to the backbone: {unused[:5]}")
    return out


# ----------------------------------------------------------------------------- orbax side


def save_backbone(path: str, variables: Mapping, *, source: str = "", overwrite=False) -> str:
    """Write backbone {"params", "batch_stats"} as an orbax checkpoint at directory `path`."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    state = {
        k: jax.tree.map(lambda x: np.asarray(x, np.float32), as_dict(variables[k]))
        for k in ("params", "batch_stats")
    }
    params = flat(state["params"])
    meta = dict(
        format=FORMAT,
        depth=infer_depth(keras_layer_name(p[:-1]) for p in params),
        width=int(params[("conv1_conv", "kernel")].shape[-1]),
        source=source,
        checksums=array_checksums(state),
    )
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, state, force=overwrite, custom_metadata=meta)
    checkpointer.wait_until_finished()
    return path


# ----------------------------------------------------------------------------- CLI


def convert(depth: int, out: str, weights: str | None = "imagenet", overwrite=False) -> str:
    """Keras ResNet{depth} with `weights` -> orbax backbone checkpoint at `out`."""
    model = keras_resnet(depth, weights)
    variables = variables_from_keras(model)
    found = infer_depth(_keras_weights(model))
    if found != depth:
        raise PretrainedMismatch(f"{weights} holds a ResNet-{found}, not ResNet-{depth}")
    return save_backbone(out, variables, source=str(weights), overwrite=overwrite)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, choices=KERAS_DEPTHS, default=152)
    parser.add_argument("--out", required=True, help="orbax checkpoint directory to write")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none or a file path")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    weights = None if args.weights.lower() == "none" else args.weights
    path = convert(args.depth, args.out, weights, overwrite=args.overwrite)
    shapes = flat(backbone_shapes(args.depth)["params"])
    print(f"wrote ResNet-{args.depth} backbone ({num_scalars(shapes):,} parameters) to {path}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TF must not reserve GPU memory JAX needs
    main()
