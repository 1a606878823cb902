"""A training workdir read back: its resolved config and its trained network, no optimizer.

  model = workdir.load("runs/unet")                 # the config the run saved
  model = workdir.load("runs/unet", config=config)  # a config that computes the same network
  model = workdir.load("unet.nucjax")               # a model bundle (nucjax.bundle) the same way
  workdir.export("runs/unet", "unet.nucjax")        # write that bundle

Everything that takes a workdir takes a bundle file instead: it holds the same config and
variables, and outputs that would go into the workdir go beside the bundle (output_dir).

The trainer saves its resolved config as WORKDIR/config.json, so evaluate and predict need no
--config. A config given anyway may change how images are evaluated or post-processed
(config.eval), the optimizer or the data source, but not what the network computes
(NETWORK_FIELDS): a difference there is a ConfigMismatchError naming the fields.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import ml_collections

from nucjax import bundle, checkpoint, models, outputs
from nucjax.config_checks import ConfigError
from nucjax.data.images import convertible
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
    on one device; step: the checkpoint's step; seeds: the TrainedModel of
    config.eval.seeds_from (whose nuclei seed this one's post-processing), or None;
    handed_view: for a seed model, the input view of the images it is handed (the seeded
    model's), turned into its own by images.convert_view; "" = its own."""

    config: Any
    spec: ModelSpec
    variables: dict
    step: int
    seeds: Any = None
    handed_view: str = ""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def save_config(workdir: str, config) -> str:
    """Write the resolved config (defaults, variant and overrides applied) as JSON."""
    return outputs.write_text(
        os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2) + "\n"
    )


class WorkdirBusyError(RuntimeError):
    """Another process is training in the same workdir."""


@contextlib.contextmanager
def training_lock(workdir: str) -> Iterator[None]:
    """Holds WORKDIR/.training.lock (an exclusive flock, released by the kernel however the
    process ends, so never stale) while a run trains: a second run in the same workdir
    would interleave its checkpoints with this one's and crash deleting them.

    Raises WorkdirBusyError naming the workdir and the holder's pid."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, ".training.lock"), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise WorkdirBusyError(
                f"{workdir} is in use: another nucjax run (pid {holder}) is training there; "
                "wait for it to end or use another --workdir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _merged(defaults: dict, saved: dict) -> dict:
    """defaults with every value of `saved` written over it, recursively."""
    out = dict(defaults)
    for key, value in saved.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def _defaults_of(model_name: str) -> dict:
    """The paper variant of nucjax/configs/<model_name>.py as a dict; {} for a model nucjax
    ships no config for."""
    try:
        module = importlib.import_module(f"nucjax.configs.{model_name}")
    except ImportError:
        return {}
    return json.loads(module.get_config().to_json_best_effort())


def output_dir(workdir: str, name: str) -> str:
    """Where outputs called `name` (eval, predictions) of a workdir go: WORKDIR/name, or for
    a bundle DIR/STEM.nucjax the folder DIR/STEM_name beside it."""
    workdir = os.path.abspath(workdir)
    if bundle.is_bundle_path(workdir):
        return f"{os.path.splitext(workdir)[0]}_{name}"
    return os.path.join(workdir, name)


def saved_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The config the trainer saved in `workdir` (or a bundle holds), or None for a workdir
    without one.

    Fields added to nucjax after the run was saved take their config file's defaults, so an
    older workdir still evaluates and predicts (and new evaluation options can be set).
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if bundle.is_bundle_path(workdir):
        saved = bundle.read(workdir, arrays=False).config
    elif os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    else:
        return None
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


def _bundle_variables(path: str, step: int | None) -> tuple[dict, dict, int]:
    """(variables on the first device, meta, step) of a bundle, as restore_variables gives."""
    contents = bundle.read(path)
    if step is not None and step != contents.step:
        raise checkpoint.CheckpointNotFoundError(
            f"{path} is a model bundle of checkpoint step {contents.step} only, not {step}"
        )
    variables = jax.device_put(contents.variables, jax.local_devices()[0])
    return variables, contents.meta, contents.step


def load(workdir: str, config=None, step: int | None = None) -> TrainedModel:
    """The trained network of `workdir` at checkpoint `step` (default latest), or of the model
    bundle file `workdir` (nucjax.bundle; step: None or the bundle's).

    Raises checkpoint.CheckpointNotFoundError, ConfigMismatchError, bundle.BundleError,
    checkpoint.IncompatibleCheckpointError when the checkpoint's parameters do not fit, or
    checkpoint.DamagedCheckpointError naming a step folder that is damaged.
    """
    config = resolve_config(workdir, config)
    spec = models.build(config)
    if bundle.is_bundle_path(workdir):
        variables, meta, step = _bundle_variables(workdir, step)
        where = workdir
    else:
        directory = checkpoint_dir(workdir)
        try:
            variables, meta, step = checkpoint.restore_variables(directory, step)
        except checkpoint.CheckpointNotFoundError as e:
            raise checkpoint.CheckpointNotFoundError(
                f"{e}; train first: nucjax train --config=... --workdir={workdir}"
            ) from None
        except checkpoint.DamagedCheckpointError as e:
            raise checkpoint.DamagedCheckpointError(
                f"{e}; use an intact one with --checkpoint_step=STEP"
            ) from None
        where = f"{directory}/{step}"
    # Traced, never run: the network this config builds, against what the checkpoint holds.
    expected = jax.eval_shape(
        lambda: spec.init_variables(jax.random.PRNGKey(0), config.data.crop_size)
    )["params"]
    checkpoint.check_compatible(meta, checkpoint.describe(config.model.name, expected), where)
    return TrainedModel(config, spec, variables, step, _seed_model(config, spec))


def _seed_model(config, spec: ModelSpec) -> TrainedModel | None:
    """load(config.eval.seeds_from) with its own saved config, or None when it is "". The
    seed model runs with this config's eval.flip_tta and transpose_tta (a detector then fuses
    its views of the image: whole_image), so one switch sets test-time augmentation for both.

    Raises config_checks.ConfigError (a ValueError, one line in nucjax.main) when this model
    cannot take seeds, the seed model's input view cannot be made from this one's
    (images.convert_view), it has seeds of its own, or config.eval.nucleus_area is also set."""
    path = config.eval.get("seeds_from", "")
    if not path:
        return None
    field = f"config.eval.seeds_from={path!r}"
    if not spec.seedable:
        raise ConfigError(f"{field}: seeds need a three-class per-pixel model, not this one")
    if config.eval.nucleus_area > 0:
        raise ConfigError(f"{field} cannot be combined with config.eval.nucleus_area")
    seeds = load(path)
    if not convertible(config.data.input_view, seeds.config.data.input_view):
        raise ConfigError(
            f"{field}: that model takes input view {seeds.config.data.input_view!r}, which "
            f"cannot be made from this one's {config.data.input_view!r}"
        )
    if seeds.seeds is not None:
        raise ConfigError(f"{field}: that model has seeds_from of its own")
    seeds.config.eval.flip_tta = bool(config.eval.flip_tta)
    seeds.config.eval.transpose_tta = bool(config.eval.transpose_tta)
    return seeds._replace(handed_view=config.data.input_view)


def export(workdir: str, output: str, step: int | None = None) -> dict:
    """Write checkpoint `step` (default latest) of `workdir` as the model bundle `output`:
    its variables, resolved config and training summary (nucjax.bundle). Returns the
    bundle's manifest plus "path" and "bytes"."""
    model = load(workdir, step=step)
    summary_path = os.path.join(workdir, "summary.json")
    summary = None
    if os.path.isfile(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
    manifest = bundle.write(
        output,
        config=json.loads(model.config.to_json_best_effort()),
        variables=jax.device_get(model.variables),
        meta=checkpoint.describe(model.config.model.name, model.variables["params"]),
        step=model.step,
        summary=summary,
    )
    return {**manifest, "path": os.path.abspath(output), "bytes": os.path.getsize(output)}


__all__ = [
    "ConfigMismatchError",
    "TrainedModel",
    "WorkdirBusyError",
    "export",
    "load",
    "output_dir",
    "resolve_config",
    "save_config",
    "training_lock",
]
