"""What the benchmark scripts share: nucjax's side of experiments/bench_vs_keras.py and
experiments/profile_train_step.py (the trainer's own train step for a paper network, on a
synthetic host batch), the model that bench_predict.py and bench_peak_memory.py segment
with (`inference_model`), and interleaved timing with the float32 matmul ceilings of numpy,
TensorFlow and XLA (`interleave`, `matmul_sides`: bench_vs_keras.py, bench_gemm_ceiling.py),
and the fused computations of a compiled XLA module (`fusion_counts`: repro_residual_depth.py).

No import-time side effects: the entry scripts choose the process settings
(nucjax.runtime.configure, XLA_FLAGS) before this module imports jax.
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import os
import re
import time

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


def interleave(runs: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each run, called in turn: runs[0], runs[1], ..., `rounds` times, so that
    load from other jobs on a shared machine hits every side alike."""
    times = {name: [] for name in runs}
    for r in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
        print(
            f"  round {r}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()), flush=True
        )
    return times


def matmul_sides(n: int, sides=("numpy", "tensorflow")) -> dict:
    """side -> run(): one float32 (n, n) @ (n, n) in that library (2 n^3 FLOPs), warmed up.

    numpy: its bundled OpenBLAS, with the kernel it picked for this CPU (openblas_core);
    tensorflow: tf.linalg.matmul with TF's default CPU kernels (oneDNN, which generates code
    for the CPU it finds, AVX-512 included); jax: XLA:CPU's dot under the process's XLA_FLAGS.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(n, n)).astype(np.float32) for _ in range(2))
    runs = {}
    if "numpy" in sides:
        runs["numpy"] = lambda: a @ b
    if "tensorflow" in sides:
        import tensorflow as tf

        ta, tb = tf.constant(a), tf.constant(b)
        runs["tensorflow"] = lambda: tf.linalg.matmul(ta, tb).numpy()
    if "jax" in sides:
        import jax

        ja, jb = jax.device_put(a), jax.device_put(b)
        dot = jax.jit(lambda p, q: p @ q)
        runs["jax"] = lambda: dot(ja, jb).block_until_ready()
    for run in runs.values():
        run()  # threads start, XLA compiles
    return runs


def openblas_core() -> str:
    """The kernel numpy's bundled OpenBLAS chose for this CPU ('Haswell' = AVX2), or ''."""
    import numpy as np

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_corename64_", "openblas_get_corename"):
            if hasattr(lib, name):
                getter = getattr(lib, name)
                getter.restype = ctypes.c_char_p
                return getter().decode()
    return ""


def fusion_counts(hlo_text: str) -> tuple[int, int]:
    """(number of fused computations, most parameters of any) in a compiled module's text
    (`jax.jit(f).lower(...).compile().as_text()`)."""
    bodies = re.split(r"\n(?=%?[\w.\-]+ \()", hlo_text)
    params = [
        len(re.findall(r"parameter\(\d+\)", body))
        for body in bodies
        if (m := re.match(r"%?([\w.\-]+) \(", body)) and "fused" in m.group(1)
    ]
    return len(params), max(params, default=0)
