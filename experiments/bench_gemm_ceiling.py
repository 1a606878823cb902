"""One float32 matmul in numpy, TensorFlow and JAX (XLA:CPU), interleaved in one process.

  python experiments/bench_gemm_ceiling.py --size=4096 --rounds=7
  python experiments/bench_gemm_ceiling.py --jax_flags="--xla_cpu_experimental_ynn_fusion_type="

The minimal reproduction behind bench_vs_keras.py's gap: how fast each framework's own dense
kernel runs on this CPU, with nothing else in the way. Every round runs each side once, so
load on a shared machine hits all alike; prints the median GFLOP/s of each (2 n^3 FLOPs a
matmul), the ratios to TensorFlow/oneDNN and which OpenBLAS kernel numpy uses, as one JSON
line. --jax_flags (XLA_FLAGS for this process, e.g. to route the dot elsewhere) is set before
jax starts; nucjax.runtime.configure then adds the trainer's own CPU flag as in training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jax_flags", default=None, help="XLA_FLAGS for the JAX side")
    args = parser.parse_args()
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"  # TensorFlow's default kernels (oneDNN)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.jax_flags is not None:
        os.environ["XLA_FLAGS"] = args.jax_flags
    import nucjax.runtime

    nucjax.runtime.configure()
    from experiments.nucjax_steps import interleave, matmul_sides, openblas_core

    runs = matmul_sides(args.size, ("numpy", "tensorflow", "jax"))
    times = interleave(runs, args.rounds)
    flop = 2 * args.size**3
    gflops = {k: flop / statistics.median(v) / 1e9 for k, v in times.items()}
    record = {
        "size": args.size,
        "rounds": args.rounds,
        **{f"{k}_gflops": round(v, 1) for k, v in gflops.items()},
        "jax_over_tensorflow": round(gflops["jax"] / gflops["tensorflow"], 3),
        "numpy_over_tensorflow": round(gflops["numpy"] / gflops["tensorflow"], 3),
        "numpy_openblas_core": openblas_core(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
