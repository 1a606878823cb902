"""Pretrained backbones: read a backbone checkpoint and load it into a model's `backbone`.

The trainer's hooks for every model with a backbone: `maybe_load_pretrained` (the spec's
prepare_variables) loads `config.model.pretrained` into the `backbone` subtree, and
`backbone_mask` (the spec's frozen) marks that subtree for config.model.freeze_backbone_steps.

A backbone checkpoint is an orbax checkpoint of {"params", "batch_stats"} of ResNetBackbone
(nucjax.models.resnet), with metadata {format: FORMAT, depth, width, source, checksums}
(checkpoint.array_checksums); nucjax.models.keras_import writes them from Keras models.
Backbone leaves are named after Keras layers: the flax path conv4_block7/2_bn is the Keras
layer conv4_block7_2_bn.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from nucjax.checkpoint import checksum_mismatches

BACKBONE = "backbone"  # name of the backbone subtree in every model that has one
FORMAT = "nucjax.resnet_backbone.v1"


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


def flat(tree) -> dict[tuple[str, ...], object]:
    """A nested mapping (dicts or flax FrozenDicts) -> {path tuple: leaf}."""
    return traverse_util.flatten_dict(as_dict(tree))


def as_dict(tree):
    """Nested mappings -> nested plain dicts (leaves kept)."""
    if isinstance(tree, Mapping):
        return {k: as_dict(v) for k, v in tree.items()}
    return tree


def num_scalars(flat_tree: Mapping) -> int:
    """Total number of scalars in the arrays of a flat {path: array} mapping."""
    return int(sum(np.prod(np.shape(v)) for v in flat_tree.values()))


def keras_layer_name(path: Iterable[str]) -> str:
    """Flax module path of a backbone leaf (without the leaf) -> Keras layer name."""
    return "_".join(path)


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
        state = as_dict(checkpointer.restore(path))
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
    # orbax does not check array bytes stored raw: a flipped byte would load silently.
    if bad := checksum_mismatches(meta.get("checksums", {}), state):
        raise PretrainedMismatch(
            f"checkpoint {path} is damaged: array {bad[0]} does not match the checksum "
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
    variables = as_dict(variables)
    if BACKBONE not in variables.get("params", {}):
        raise PretrainedMismatch(
            f"the model has no '{BACKBONE}' parameters to load {path} into; "
            f"top-level params: {sorted(variables.get('params', {}))}"
        )
    counts = {}
    for collection in ("params", "batch_stats"):
        model_flat = flat(variables[collection][BACKBONE])
        ckpt_flat = flat(state.get(collection, {}))
        _check_fits(model_flat, ckpt_flat, collection, meta)
        loaded = {p: np.asarray(ckpt_flat[p], dtype=v.dtype) for p, v in model_flat.items()}
        variables[collection][BACKBONE] = traverse_util.unflatten_dict(loaded)
        counts[collection] = (num_scalars(loaded), len(loaded))
    report = LoadReport(
        path=os.path.abspath(path),
        loaded_params=counts["params"][0],
        loaded_batch_stats=counts["batch_stats"][0],
        loaded_arrays=counts["params"][1] + counts["batch_stats"][1],
        fresh_params=num_scalars(flat(variables["params"])) - counts["params"][0],
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
    return {k: jax.tree.map(lambda _, b=k == BACKBONE: b, v) for k, v in as_dict(params).items()}


__all__ = [
    "BACKBONE",
    "FORMAT",
    "LoadReport",
    "PretrainedMismatch",
    "as_dict",
    "backbone_mask",
    "flat",
    "keras_layer_name",
    "load_pretrained",
    "maybe_load_pretrained",
    "network_order",
    "num_scalars",
    "read_backbone",
]
