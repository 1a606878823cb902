"""Trained-looking models for tests, without training.

`threshold_workdir` writes a workdir (checkpoint and config.json, as the trainer writes them)
of a hand-set Simple CNN (binary target) that marks pixels brighter than the image mean as
nucleus: a deterministic model that finds real nuclei in synthetic fluorescence images, so
the evaluate and predict tests can check the nuclei they get.
"""

import os

import jax
import numpy as np

from configs import simple_cnn
from nucjax import checkpoint, models, parallel, train, workdir
from nucjax.data import synthetic
from nucjax.data.images import normalize_image


def threshold_config():
    config = simple_cnn.get_config("tiny")
    config.model.target = "binary"
    config.data.synthetic_brightfield_fraction = 0.0  # bright nuclei on dark: what it can see
    return config


def threshold_params(params):
    """Every layer passes (r + g + b) forward through a monotone sigmoid; out: 20 (h - 0.5)."""
    p = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), params)
    p["BatchNorm_0"]["scale"][:] = 1.0
    p["dense_0"]["kernel"][0, 0, :, 0] = 4.0 / 3.0
    for i in range(1, 6):
        p[f"dense_{i}"]["kernel"][0, 0, 0, 0] = 8.0
        p[f"dense_{i}"]["bias"][0] = -4.0
    p["output"]["kernel"][1, 1, 0, 0] = 20.0
    p["output"]["bias"][0] = -10.0
    return p


def _random_params(params, seed=0):
    """Random weights shaped like `params` (ShapeDtypeStructs), without running the slow init."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: rng.normal(0, 0.3, x.shape).astype(np.float32), params)


def state_template(spec, config):
    """The TrainState the trainer checkpoints, as ShapeDtypeStructs on the first device
    (traced, never run: initialising compiles every initializer)."""
    tx = train.make_optimizer(spec, config, 1)
    mesh = parallel.make_mesh(jax.devices()[:1])
    abstract = jax.eval_shape(lambda: train.init_state(spec, tx, config, mesh))
    sharding = parallel.replicated(mesh)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract
    )


def random_model(config, seed=0):
    """(spec, variables): random weights, batch norm statistics mean 0, variance 1."""
    spec = models.build(config)
    template = state_template(spec, config)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, x: np.full(x.shape, 1.0 if path[-1].key == "var" else 0.0, np.float32),
        template.batch_stats,
    )
    return spec, {"params": _random_params(template.params, seed), "batch_stats": stats}


def save_checkpoint(config, workdir_path, *, step=1, params_fn=_random_params):
    """A checkpoint and config.json as the trainer writes them: a TrainState with
    params_fn(param shapes)."""
    spec = models.build(config)
    template = state_template(spec, config)
    state = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), template)
    state = state.replace(params=params_fn(template.params))
    state = jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), state, template)
    state = state.replace(batch_stats=random_model(config)[1]["batch_stats"])
    ckpt = checkpoint.Checkpointer(os.path.join(workdir_path, "checkpoints"), every_steps=0, keep=3)
    ckpt.save(step, state, checkpoint.describe(config.model.name, state.params))
    ckpt.wait()
    ckpt.close()
    workdir.save_config(workdir_path, config)
    return state


def threshold_workdir(workdir):
    config = threshold_config()
    save_checkpoint(config, str(workdir), step=7, params_fn=threshold_params)
    return config


def synthetic_image(shape, seed=0):
    """(normalised (H, W, 3) grey fluorescence image, its label) of synthetic nuclei."""
    rng = np.random.default_rng(seed)
    image, label = synthetic.synthetic_example(rng, shape, False, colour="grey")
    return normalize_image(image), label
