"""What the benchmark scripts share: nucjax's side of experiments/bench_vs_keras.py and
experiments/profile_train_step.py (the trainer's own train step for a paper network, on a
synthetic host batch), and the model that bench_predict.py and bench_peak_memory.py segment
with (`inference_model`).

No import-time side effects: the entry scripts choose the process settings
(nucjax.runtime.configure, XLA_FLAGS) before this module imports jax.
"""

from __future__ import annotations

import importlib

# net -> (nucjax.configs module, its variant, config.model overrides)
NETS = {
    "unet": ("unet", "paper", {}),
    "resnet50": ("resnet", "paper", {"depth": 50}),
    "resnet152": ("resnet", "paper", {"depth": 152}),
}


def net_config(net: str, size: int, batch: int):
    """The paper config of `net`, with crop size and batch overridden when > 0."""
    if net not in NETS:
        raise ValueError(f"unknown net {net!r}; choose from {', '.join(NETS)}")
    module, variant, model = NETS[net]
    config = importlib.import_module(f"nucjax.configs.{module}").get_config(variant)
    config.model.update(model)
    config.data.crop_size = size or config.data.crop_size
    config.train.batch_size = batch or config.train.batch_size
    return config


def synthetic_batch(batch: int, size: int) -> dict:
    """A host batch (nucjax.models.spec): image (B, S, S, 3), label (B, S, S), valid (B,)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
        "label": rng.integers(0, 5, (batch, size, size)).astype(np.int32),
        "valid": np.ones(batch, np.float32),
    }


def jax_side(config, host, compiler_options: dict | None = None):
    """nucjax's train step on `host`: (run one step, parameters + statistics, a dict that
    holds the step's FLOPs after the first run).

    The first call lowers and compiles (the trainer does the same before its first step),
    with `compiler_options` (XLA debug options, as in XLA_FLAGS without the dashes) if given."""
    import jax

    from nucjax import models, parallel, train

    spec = models.build(config)
    mesh = parallel.make_mesh()
    tx = train.make_optimizer(spec, config, 1000)
    holder = {"state": train.init_state(spec, tx, config, mesh)}
    params = sum(x.size for x in jax.tree.leaves(holder["state"].variables))
    batch = parallel.shard_batch(host, mesh)
    jitted = train.make_train_step(spec, tx, mesh)

    def run():
        if "step" not in holder:
            lowered = jitted.lower(holder["state"], batch)
            holder["step"] = lowered.compile(compiler_options=compiler_options)
            holder["flops"] = float(holder["step"].cost_analysis()["flops"])
        holder["state"], sums = holder["step"](holder["state"], batch)
        jax.block_until_ready(sums)

    return run, params, holder


def parse_options(text: str) -> dict[str, bool | int | str]:
    """--jax_options "a=true b=3 c=X" -> {"a": True, "b": 3, "c": "X"}: XLA's compile options
    take booleans and integers as such, enums and lists as strings."""
    pairs = [item.partition("=") for item in text.split()]
    if not pairs or any(not name or not eq for name, eq, _ in pairs):
        raise ValueError(f"--jax_options={text!r}: give name=value pairs separated by spaces")
    return {name.removeprefix("--"): _option_value(value) for name, _, value in pairs}


def _option_value(text: str) -> bool | int | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        return text


def inference_model(workdir: str | None, config):
    """(config, spec, variables, weights) of a trained workdir's latest checkpoint, or else of
    `config` with freshly initialised weights; weights: a line saying which."""
    import jax

    from nucjax import models
    from nucjax import workdir as workdirs

    if workdir:
        model = workdirs.load(workdir, config)
        return model.config, model.spec, model.variables, f"trained, step {model.step} of {workdir}"
    spec = models.build(config)
    init = jax.jit(lambda k: spec.init_variables(k, config.data.crop_size))
    return config, spec, init(jax.random.PRNGKey(0)), "freshly initialised"
