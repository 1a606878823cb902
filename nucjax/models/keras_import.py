"""Pretrained ResNet backbones: import from Keras, store with orbax, load into a model.

  python -m nucjax.models.keras_import --depth=152 --out=pretrained/resnet152
  python -m nucjax.models.keras_import --depth=50 --out=DIR --weights=PATH.weights.h5

--weights=imagenet (the default) lets Keras download its ImageNet weights (needs internet);
PATH is a Keras weights file (.weights.h5, or the legacy .h5 that keras.applications
downloads) or a whole saved model (.keras). The output is an orbax checkpoint of
{"params", "batch_stats"} for `ResNetBackbone` (nucjax.models.resnet). Setting
`config.model.pretrained=DIR` makes the trainer load it into the model's `backbone` subtree
through `maybe_load_pretrained`; the head stays freshly initialised.

Keras and TensorFlow are imported only by the conversion functions, never by the loaders.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import zlib
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from nucjax.models import resnet

BACKBONE = "backbone"  # name of the backbone subtree in every model that has one
FORMAT = "nucjax.resnet_backbone.v1"
KERAS_DEPTHS = (50, 101, 152)
# flax leaf name -> index into Keras get_weights(), for Conv2D and for BatchNormalization
# ([gamma, beta, moving_mean, moving_variance]); both layouts are the same as flax's.
_CONV_INDEX = {"kernel": 0, "bias": 1}
_BN_INDEX = {"scale": 0, "bias": 1, "mean": 2, "var": 3}


class PretrainedMismatch(ValueError):
    """The pretrained weights do not fit the network they are loaded into."""


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What `load_pretrained` did: counts of scalars (parameters) and of arrays."""

    path: str
    loaded_params: int  # trainable scalars taken from the checkpoint
    loaded_batch_stats: int  # batch-norm running statistics taken from the checkpoint
    loaded_arrays: int
    fresh_params: int  # trainable scalars outside the backbone, left as initialised

    def __str__(self) -> str:
        return (
            f"loaded {self.loaded_params:,} backbone parameters and "
            f"{self.loaded_batch_stats:,} batch-norm statistics ({self.loaded_arrays} arrays) "
            f"from {self.path}; {self.fresh_params:,} head parameters freshly initialised"
        )


def _flat(tree) -> dict[tuple[str, ...], object]:
    return traverse_util.flatten_dict(_as_dict(tree))


def _as_dict(tree):
    if isinstance(tree, Mapping):
        return {k: _as_dict(v) for k, v in tree.items()}
    return tree


def _size(flat: Mapping) -> int:
    return int(sum(np.prod(np.shape(v)) for v in flat.values()))


def backbone_shapes(depth: int, width: int = 64) -> dict[str, dict]:
    """{"params", "batch_stats"} of ResNetBackbone(depth, width) as ShapeDtypeStructs."""
    module = resnet.ResNetBackbone(depth=depth, width=width)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
    return {"params": shapes["params"], "batch_stats": shapes["batch_stats"]}


def keras_layer_name(path: tuple[str, ...]) -> str:
    """Flax module path of a backbone leaf (without the leaf) -> Keras layer name."""
    return "_".join(path)


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
        flat = {}
        for path, shape in _flat(tree).items():
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
            flat[path] = value
            used.add(layer)
        out[collection] = traverse_util.unflatten_dict(flat)
    unused = sorted(set(weights) - used)
    if unused:
        raise PretrainedMismatch(f"Keras layers not mapped to the backbone: {unused[:5]}")
    return out


# ----------------------------------------------------------------------------- orbax side


def _checksums(state: Mapping) -> dict[str, int]:
    """{"params/conv1_conv/kernel": crc32 of the array's bytes, ...}.

    orbax stores arrays uncompressed and unchecked: a flipped byte would load silently.
    """
    flat = traverse_util.flatten_dict(state)
    return {"/".join(k): zlib.crc32(np.ascontiguousarray(v).tobytes()) for k, v in flat.items()}


def save_backbone(path: str, variables: Mapping, *, source: str = "", overwrite=False) -> str:
    """Write backbone {"params", "batch_stats"} as an orbax checkpoint at directory `path`."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    state = {
        k: jax.tree.map(lambda x: np.asarray(x, np.float32), _as_dict(variables[k]))
        for k in ("params", "batch_stats")
    }
    params = _flat(state["params"])
    meta = dict(
        format=FORMAT,
        depth=infer_depth(keras_layer_name(p[:-1]) for p in params),
        width=int(params[("conv1_conv", "kernel")].shape[-1]),
        source=source,
        checksums=_checksums(state),
    )
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, state, force=overwrite, custom_metadata=meta)
    checkpointer.wait_until_finished()
    return path


def read_backbone(path: str) -> tuple[dict, dict]:
    """An orbax backbone checkpoint -> ({"params", "batch_stats"} of numpy arrays, metadata).

    Raises FileNotFoundError for a missing directory and PretrainedMismatch for one that is
    damaged, is not a nucjax backbone checkpoint, or holds an array whose checksum is wrong.
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"pretrained backbone checkpoint {path} does not exist")
    if not os.listdir(path):
        raise PretrainedMismatch(f"cannot read {path}: it is an empty directory, not a checkpoint")
    try:
        checkpointer = ocp.StandardCheckpointer()
        meta = dict(checkpointer.metadata(path).custom_metadata or {})
        state = _as_dict(checkpointer.restore(path))
    except Exception as e:  # orbax/tensorstore raise many types for a damaged directory
        raise PretrainedMismatch(
            f"cannot read the pretrained backbone checkpoint {path} (damaged or not an orbax "
            f"checkpoint): {type(e).__name__}: {e}"
        ) from e
    if meta.get("format") != FORMAT or not isinstance(state, Mapping):
        raise PretrainedMismatch(
            f"{path} is not a nucjax ResNet backbone checkpoint (metadata {meta}); make one "
            "with python -m nucjax.models.keras_import"
        )
    expected, found = meta.get("checksums", {}), _checksums(state)
    for name in sorted(set(expected) | set(found)):
        if expected.get(name) != found.get(name):
            raise PretrainedMismatch(
                f"checkpoint {path} is damaged: array {name} does not match the checksum "
                "written with it"
            )
    return state, meta


def _describe(meta: Mapping) -> str:
    return f"ResNet-{meta.get('depth')} width {meta.get('width')}"


def load_pretrained(path: str, variables: Mapping) -> tuple[dict, LoadReport]:
    """Replace the `backbone` subtree of a model's `variables` by the checkpoint at `path`.

    variables: {"params": {"backbone": ..., head...}, "batch_stats": {"backbone": ...}, ...}
    Every backbone leaf of the model must be in the checkpoint with the same shape, and the
    checkpoint must hold nothing else; otherwise PretrainedMismatch names the first layer that
    does not fit and why. Nothing is loaded partially. Returns (new variables, LoadReport).
    """
    state, meta = read_backbone(path)
    variables = _as_dict(variables)
    if BACKBONE not in variables.get("params", {}):
        raise PretrainedMismatch(
            f"the model has no '{BACKBONE}' parameters to load {path} into; "
            f"top-level params: {sorted(variables.get('params', {}))}"
        )
    counts = {}
    for collection in ("params", "batch_stats"):
        model_flat = _flat(variables[collection][BACKBONE])
        ckpt_flat = _flat(state.get(collection, {}))
        _check_fits(model_flat, ckpt_flat, collection, meta)
        loaded = {p: np.asarray(ckpt_flat[p], dtype=v.dtype) for p, v in model_flat.items()}
        variables[collection][BACKBONE] = traverse_util.unflatten_dict(loaded)
        counts[collection] = (_size(loaded), len(loaded))
    report = LoadReport(
        path=os.path.abspath(path),
        loaded_params=counts["params"][0],
        loaded_batch_stats=counts["batch_stats"][0],
        loaded_arrays=counts["params"][1] + counts["batch_stats"][1],
        fresh_params=_size(_flat(variables["params"])) - counts["params"][0],
    )
    return variables, report


def network_order(path: tuple[str, ...]) -> tuple:
    """Sort key of a backbone leaf path: stage, block, layer as in the network, conv before bn."""
    tokens = re.split(r"(\d+)", keras_layer_name(path[:-1]))
    layer = [
        int(t) if i % 2 else {"_conv": "0", "_bn": "1"}.get(t, t) for i, t in enumerate(tokens)
    ]
    return (*layer, ("kernel", "scale", "bias", "mean", "var").index(path[-1]))


def _check_fits(model: Mapping, ckpt: Mapping, collection: str, meta: Mapping) -> None:
    """PretrainedMismatch naming the first layer (in network order) that does not fit."""
    problems = []
    for path in sorted(model, key=network_order):
        layer, leaf = keras_layer_name(path[:-1]), path[-1]
        if path not in ckpt:
            problems.append(f"layer {layer} ({collection} {leaf}) is missing from the checkpoint")
        elif np.shape(ckpt[path]) != np.shape(model[path]):
            problems.append(
                f"layer {layer} ({collection} {leaf}) has checkpoint shape "
                f"{np.shape(ckpt[path])}, model shape {np.shape(model[path])}"
            )
    extra = sorted((p for p in ckpt if p not in model), key=network_order)
    problems += [f"checkpoint layer {keras_layer_name(p[:-1])} is not in the model" for p in extra]
    if problems:
        raise PretrainedMismatch(
            f"the checkpoint ({_describe(meta)}) does not fit the model's backbone: "
            f"{problems[0]}; {len(problems)} arrays do not fit in all. Is it for another "
            "depth or width?"
        )


def maybe_load_pretrained(config, variables):
    """The trainer's hook, called once after init for every model.

    Returns `variables` unchanged when `config.model.pretrained` is absent or empty, else the
    variables with the backbone loaded from that checkpoint (and logs the LoadReport).
    """
    path = config.model.get("pretrained", "")
    if not path:
        return variables
    variables, report = load_pretrained(path, variables)
    logging.info("pretrained backbone: %s", report)
    return variables


def backbone_mask(params):
    """params -> pytree of bool, True for leaves under the top-level `backbone` subtree.

    For nucjax.optim.make_optimizer(..., frozen=backbone_mask, freeze_steps=K).
    """
    return {k: jax.tree.map(lambda _, b=k == BACKBONE: b, v) for k, v in _as_dict(params).items()}


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
    shapes = _flat(backbone_shapes(args.depth)["params"])
    print(f"wrote ResNet-{args.depth} backbone ({_size(shapes):,} parameters) to {path}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TF must not reserve GPU memory JAX needs
    main()
