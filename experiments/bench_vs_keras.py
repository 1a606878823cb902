"""nucjax's train step against the same network in Keras/TF, interleaved in one process.

  python experiments/bench_vs_keras.py                        # paper sizes (slow: see below)
  python experiments/bench_vs_keras.py --nets=resnet50 --size=128 --batch=4 --steps=5
  python experiments/bench_vs_keras.py --size=64 --batch=2 --steps=2     # a quick check

Nets (paper configs, Table 2): unet (configs/unet.py paper: batch 16, Adam lr 0.01),
resnet50 and resnet152 (configs/resnet.py paper at depth 50 / 152: batch 10, Adadelta 0.1),
256x256. The nucjax side is the trainer's own step (nucjax.train.make_train_step, on every
device JAX sees); the Keras side is its twin (experiments/keras_nets.py: same layers and
parameter count, checked; same loss and optimizer) in a tf.function GradientTape step.

Each round runs one JAX step, one Keras step (one Keras+XLA step with --keras_xla) and one
float32 4096^2 matmul in numpy and one in TensorFlow, so that load from other jobs on a shared
machine hits every side alike. Round 0 compiles (reported apart as *_first_s; for JAX,
lowering + compilation + the first step); medians are over rounds 1..steps. FLOPs per step
come from XLA's cost analysis of nucjax's compiled step, and the same count divides both
sides' median times. Two matmul ceilings: sgemm_gflops is numpy's (its OpenBLAS picks the
AVX2 'Haswell' kernel on this AVX-512 CPU, numpy_openblas_core), onednn_gemm_gflops is
TensorFlow's oneDNN matmul, which runs AVX-512 code (experiments/bench_gemm_ceiling.py).

XLA options, interleaved too: each --jax_options value adds a JAX side whose step is compiled
with those XLA debug options (`Lowered.compile(compiler_options=...)`), so flags are compared
under the same load in one process. Only options XLA reads at compile time act this way;
an enum list takes XLA's enum names: xla_cpu_experimental_ynn_fusion_type=
LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION (an empty value is an empty list).

Keras runs with TensorFlow's default CPU kernels (oneDNN on): nucjax.runtime.configure()
turns oneDNN off for the input pipeline, so this script sets TF_ENABLE_ONEDNN_OPTS=1 before
TensorFlow is imported, and reports what TF says it used. XLA_FLAGS from the environment
reach the JAX side (runtime.configure adds its CPU convolution flag unless one is given).

Prints one JSON line per net: net, jax_median_s, keras_median_s, ratio (nucjax / Keras), then
ratio_paired (the median of the rounds' own ratios, robust to load that changes between
rounds) and the rest. Paper sizes on a 2-core CPU: a ResNet-152 step takes ~50-100 s a side.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Before anything imports TensorFlow: Keras gets TF's default kernels, not the pipeline's.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()  # rbg PRNG and the CPU convolution flag, as in training

from experiments.nucjax_steps import (  # noqa: E402
    NETS,
    interleave,
    jax_side,
    matmul_sides,
    net_config,
    openblas_core,
    parse_options,
    synthetic_batch,
)

SGEMM_SIZE = 4096

flags.DEFINE_list("nets", list(NETS), f"networks to time, of {', '.join(NETS)}")
flags.DEFINE_integer("steps", 5, "timed rounds after the compiling one")
flags.DEFINE_integer("size", 0, "square input size (a multiple of 32); 0 = the config's")
flags.DEFINE_integer("batch", 0, "global batch; 0 = the config's (Table 2)")
flags.DEFINE_bool("keras_xla", False, "also time Keras with tf.function(jit_compile=True)")
flags.DEFINE_multi_string(
    "jax_options",
    [],
    "also time nucjax's step compiled with these XLA options, 'name=value[ name=value]' "
    "(e.g. xla_cpu_enable_fast_math=true); repeat the flag for several variants",
)
flags.DEFINE_string("out", "", "also write the results as a JSON list to this file")
FLAGS = flags.FLAGS


def keras_side(config, host, jit_compile: bool):
    """The Keras twin's step on `host`: (run one step, parameters + statistics)."""
    import tensorflow as tf

    from experiments import keras_nets

    model = keras_nets.network(config, host["image"].shape[1])
    step = keras_nets.train_step(model, keras_nets.optimizer(config.optim), jit_compile)
    inputs = keras_nets.loss_inputs(config.model, host["label"], host["valid"])
    args = [tf.constant(host["image"])] + [tf.constant(inputs[k]) for k in inputs]
    return (lambda: step(*args).numpy()), model.count_params()


def paired(a: list[float], b: list[float]) -> float:
    """Median over the timed rounds of a[i] / b[i]: steps of one round ran under the same
    load, so this ratio shrugs off load that changes between rounds."""
    return statistics.median(x / y for x, y in zip(a[1:], b[1:], strict=True))


def summary(net: str, config, times: dict, params: dict, flops: float, environment: dict):
    """One result record; the issue's four fields first. Extra sides (keras_xla, JAX with
    other XLA options) add their median and its ratios to jax and keras."""
    median = {k: statistics.median(v[1:]) for k, v in times.items()}
    sgemm = 2 * SGEMM_SIZE**3 / median.pop("sgemm") / 1e9
    onednn_gemm = 2 * SGEMM_SIZE**3 / median.pop("onednn_gemm") / 1e9
    sides = [k for k in median]
    record = {
        "net": net,
        "jax_median_s": median["jax"],
        "keras_median_s": median["keras"],
        "ratio": median["jax"] / median["keras"],
        "ratio_paired": paired(times["jax"], times["keras"]),
    }
    for k in sides[2:]:
        record[f"{k}_median_s"] = median[k]
        record[f"{k}_over_jax_paired"] = paired(times[k], times["jax"])
        record[f"{k}_over_keras_paired"] = paired(times[k], times["keras"])
    for k in sides:
        record[f"{k}_first_s"] = times[k][0]
        record[f"{k}_min_s"] = min(times[k][1:])
    record.update(
        batch=config.train.batch_size,
        size=config.data.crop_size,
        steps=len(times["jax"]) - 1,
        params=params["jax"],
        step_gflop=flops / 1e9,
        sgemm_gflops=sgemm,
        onednn_gemm_gflops=onednn_gemm,
    )
    for k in sides:
        record[f"{k}_gflops"] = flops / median[k] / 1e9
        record[f"{k}_of_sgemm"] = record[f"{k}_gflops"] / sgemm
        record[f"{k}_of_onednn_gemm"] = record[f"{k}_gflops"] / onednn_gemm
    return {**{k: _rounded(v) for k, v in record.items()}, **environment}


def _rounded(value):
    return float(f"{value:.4g}") if isinstance(value, float) else value


def bench_net(net: str, environment: dict) -> dict:
    """Build both sides of `net`, check they have the same size, time them interleaved."""
    config = net_config(net, FLAGS.size, FLAGS.batch)
    host = synthetic_batch(config.train.batch_size, config.data.crop_size)
    runs, params = {}, {}
    runs["jax"], params["jax"], jax_state = jax_side(config, host)
    runs["keras"], params["keras"] = keras_side(config, host, jit_compile=False)
    if FLAGS.keras_xla:
        runs["keras_xla"], params["keras_xla"] = keras_side(config, host, jit_compile=True)
    for text in FLAGS.jax_options:
        name = f"jax[{text}]"
        runs[name], params[name], _ = jax_side(config, host, parse_options(text))
    if len(set(params.values())) != 1:
        raise ValueError(f"{net}: the sides are not the same network: parameters {params}")
    ceilings = matmul_sides(SGEMM_SIZE)
    runs["sgemm"], runs["onednn_gemm"] = ceilings["numpy"], ceilings["tensorflow"]
    print(f"{net}: {params['jax']:,} parameters and statistics on every side", flush=True)
    times = interleave(runs, FLAGS.steps + 1)
    record = summary(net, config, times, params, jax_state["flops"], environment)
    del runs, jax_state
    import keras

    keras.backend.clear_session()
    gc.collect()
    return record


def environment() -> dict:
    """What the two sides ran with: oneDNN as TensorFlow reports it, XLA flags, devices."""
    import jax
    from tensorflow.python.util import _pywrap_util_port

    return {
        "tf_onednn": bool(_pywrap_util_port.IsMklEnabled()),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "jax_devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
        "cpus": os.cpu_count(),
        "numpy_openblas_core": openblas_core(),
    }


def main(argv):
    del argv
    from nucjax import outputs

    for net in FLAGS.nets:  # bad flags fail before anything is timed
        net_config(net, 0, 0)
    for text in FLAGS.jax_options:
        parse_options(text)
    env = environment()
    print(
        f"TensorFlow oneDNN: {'on' if env['tf_onednn'] else 'OFF'}; XLA_FLAGS={env['XLA_FLAGS']!r}"
    )
    records = []
    for net in FLAGS.nets:
        records.append(bench_net(net, env))
        print(json.dumps(records[-1]), flush=True)
    if FLAGS.out:
        outputs.write_text(FLAGS.out, json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
