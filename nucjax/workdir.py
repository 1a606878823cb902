"""A training workdir read back: its resolved config and its trained network, no optimizer.

  model = workdir.load("runs/unet")                 # the config the run saved
  model = workdir.load("runs/unet", config=config)  # a config that computes the same network

The trainer saves its resolved config as WORKDIR/config.json, so evaluate and predict need no
--config. A config given anyway may change how images are evaluated or post-processed
(config.eval), the optimizer or the data source, but not what the network computes
(NETWORK_FIELDS): a difference there is a ConfigMismatchError naming the fields.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any, NamedTuple

import jax
import ml_collections

from nucjax import checkpoint, models, outputs
from nucjax.models.spec import ModelSpec

CONFIG_FILE = "config.json"
# What decides the function the network computes: every config.model field and the input view,
# except the precision it trains in (the parameters stay float32 either way).
NETWORK_FIELDS = ("model", "data.input_view")
NOT_NETWORK_FIELDS = ("model.compute_dtype",)


class ConfigMismatchError(ValueError):
    """A given config builds another network than the one the workdir trained."""


class TrainedModel(NamedTuple):
    """config: the resolved config; spec: its ModelSpec; variables: {"params", "batch_stats"}
    on one device; step: the checkpoint's step."""

    config: Any
    spec: ModelSpec
    variables: dict
    step: int


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def save_config(workdir: str, config) -> str:
    """Write the resolved config (defaults, variant and overrides applied) as JSON."""
    return outputs.write_text(
        os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2) + "\n"
    )


def _merged(defaults: dict, saved: dict) -> dict:
    """defaults with every value of `saved` written over it, recursively."""
    out = dict(defaults)
    for key, value in saved.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def _defaults_of(model_name: str) -> dict:
    """The paper variant of configs/<model_name>.py as a dict; {} where that file is not
    importable (the configs folder is not beside this nucjax)."""
    try:
        module = importlib.import_module(f"configs.{model_name}")
    except ImportError:
        return {}
    return json.loads(module.get_config().to_json_best_effort())


def saved_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The config the trainer saved in `workdir`, or None for a workdir without one.

    Fields added to nucjax after the run was saved take their config file's defaults, so an
    older workdir still evaluates and predicts (and new evaluation options can be set).
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    defaults = _defaults_of(saved.get("model", {}).get("name", ""))
    return ml_collections.ConfigDict(_merged(defaults, saved))


def _flat(tree, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {'a.b': value}; tuples and lists compare as lists."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple | list) else tree}


def network_differences(saved, given) -> list[str]:
    """'field: saved vs given' for every NETWORK_FIELDS entry of the saved config where the
    configs differ (saved_config has already filled fields added after the run with their
    config file's defaults, which keep the old behaviour)."""
    flat_a = _flat(json.loads(saved.to_json_best_effort()))
    flat_b = _flat(json.loads(given.to_json_best_effort()))
    keys = {k for k in flat_a if k.startswith(NETWORK_FIELDS) and k not in NOT_NETWORK_FIELDS}
    missing = "(absent)"
    return [
        f"{k}: {flat_a.get(k, missing)!r} vs {flat_b.get(k, missing)!r}"
        for k in sorted(keys)
        if flat_a.get(k, missing) != flat_b.get(k, missing)
    ]


def resolve_config(workdir: str, config=None):
    """The config to evaluate or predict `workdir` with: `config` when given (checked against
    the saved one), else the saved one. Raises FileNotFoundError / ConfigMismatchError."""
    saved = saved_config(workdir)
    if config is None:
        if saved is None:
            raise FileNotFoundError(
                f"{os.path.join(workdir, CONFIG_FILE)} not found: pass --config=... (the config "
                "that trained this workdir)"
            )
        return saved
    if saved is not None and (diff := network_differences(saved, config)):
        raise ConfigMismatchError(
            f"--config builds another network than the one {workdir} trained "
            f"({len(diff)} fields differ, workdir vs --config): "
            + "; ".join(diff[:8])
            + ". Leave out --config to use the workdir's own."
        )
    return config


def load(workdir: str, config=None, step: int | None = None) -> TrainedModel:
    """The trained network of `workdir` at checkpoint `step` (default latest).

    Raises checkpoint.CheckpointNotFoundError, ConfigMismatchError, or
    checkpoint.IncompatibleCheckpointError when the checkpoint's parameters do not fit.
    """
    config = resolve_config(workdir, config)
    spec = models.build(config)
    directory = checkpoint_dir(workdir)
    try:
        variables, meta, step = checkpoint.restore_variables(directory, step)
    except checkpoint.CheckpointNotFoundError as e:
        raise checkpoint.CheckpointNotFoundError(
            f"{e}; train first: python -m nucjax.main --config=... --workdir={workdir}"
        ) from None
    # Traced, never run: the network this config builds, against what the checkpoint holds.
    expected = jax.eval_shape(
        lambda: spec.init_variables(jax.random.PRNGKey(0), config.data.crop_size)
    )["params"]
    checkpoint.check_compatible(
        meta, checkpoint.describe(config.model.name, expected), f"{directory}/{step}"
    )
    return TrainedModel(config, spec, variables, step)


__all__ = ["ConfigMismatchError", "TrainedModel", "load", "resolve_config", "save_config"]
