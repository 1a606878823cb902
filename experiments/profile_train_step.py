"""Where nucjax's train step spends its time on the CPU: XLA's own per-operation trace.

  python experiments/profile_train_step.py --net=resnet50 --size=128 --batch=4
  python experiments/profile_train_step.py --net=unet --size=128 --batch=4 --top=30

Builds the trainer's step for a paper network as experiments/bench_vs_keras.py does
(experiments/nucjax_steps.py), runs it once to compile, then traces --steps steps with
jax.profiler, XLA:CPU emitting one trace event per executed operation
(--xla_cpu_enable_xprof_traceme, added to XLA_FLAGS here). Prints the share of the traced
operation time per kind of operation (convolutions, transposes and copies, kernel
reversals, elementwise fusions, reductions, ...) and the --top single operations. The trace
stays in --trace_dir (Perfetto JSON, and XSpace for TensorBoard's profiler). Times are per
operation as XLA ran them; on a loaded machine read the shares, not the absolute times.
XLA runs independent operations at the same time on its thread pool, so the operation
total can exceed the wall-clock step.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
).strip()

from absl import app, flags  # noqa: E402

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()

flags.DEFINE_string("net", "resnet50", "unet, resnet50 or resnet152 (nucjax_steps.NETS)")
flags.DEFINE_integer("size", 128, "square input size")
flags.DEFINE_integer("batch", 4, "global batch")
flags.DEFINE_integer("steps", 2, "traced steps after the compiling one")
flags.DEFINE_integer("top", 20, "single operations to list")
flags.DEFINE_string("trace_dir", "", "where the trace goes; default a new temporary folder")
flags.DEFINE_string("trace_file", "", "only report on this trace.json.gz (of --steps steps)")
FLAGS = flags.FLAGS

# Operation kind by the name XLA gives the executed operation (first match wins).
KINDS = (
    ("convolution (YNNPACK)", r"^ynn_fusion"),
    ("convolution (Eigen)", r"^(convolution|conv_general_dilated)"),
    ("dot", r"^(dot|wrapped_dot|.*dot_general)"),
    ("transpose / copy", r"(transpose|copy)"),
    ("reverse", r"reverse"),
    ("reduce", r"reduce"),
    ("all-reduce", r"^all-reduce"),
    ("other fusion (elementwise)", r"fusion|^wrapped_"),
)
# Trace events that are not one XLA operation (executors, Python frames, the profiler).
NOT_OPERATIONS = re.compile(r"^(\$|ThunkExecutor|PjitFunction|Thunk::|XlaModule|TfrtCpu)")


def kind(name: str) -> str:
    for label, pattern in KINDS:
        if re.search(pattern, name):
            return label
    return "other"


def operation_times(trace_file: str) -> dict[str, float]:
    """{operation name: total self microseconds} from a Perfetto trace.json.gz.

    Self time: an event's duration less that of the events nested in it on its thread (XLA
    wraps some operations in a `call`), so no time is counted twice."""
    with gzip.open(trace_file, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    threads = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and not NOT_OPERATIONS.match(e["name"]):
            threads[e.get("pid"), e.get("tid")].append(e)
    totals: dict[str, float] = collections.Counter()
    for thread in threads.values():
        thread.sort(key=lambda e: (e["ts"], -e.get("dur", 0.0)))
        stack: list[dict] = []  # open events, each enclosing the next
        for e in thread:
            while stack and stack[-1]["ts"] + stack[-1].get("dur", 0.0) <= e["ts"]:
                stack.pop()
            dur = e.get("dur", 0.0)
            totals[e["name"]] += dur
            if stack:
                totals[stack[-1]["name"]] -= dur
            stack.append(e)
    return totals


def report(trace_file: str, steps: int, top: int) -> None:
    """Print the operation time per step by kind and the `top` operations of a trace."""
    totals = operation_times(trace_file)
    total = sum(totals.values())
    by_kind = collections.Counter()
    for name, us in totals.items():
        by_kind[kind(name)] += us
    print(f"{total / 1e6 / steps:.3f} s of XLA operations per step; trace {trace_file}")
    for label, us in by_kind.most_common():
        print(f"  {100 * us / total:5.1f} %  {us / 1e3 / steps:9.1f} ms/step  {label}")
    print(f"top {top} operations (ms per step):")
    for name, us in totals.most_common(top):
        print(f"  {us / 1e3 / steps:9.1f}  {name}")


def main(argv):
    del argv
    if FLAGS.trace_file:
        report(FLAGS.trace_file, FLAGS.steps, FLAGS.top)
        return
    import jax

    from experiments import nucjax_steps

    config = nucjax_steps.net_config(FLAGS.net, FLAGS.size, FLAGS.batch)
    host = nucjax_steps.synthetic_batch(config.train.batch_size, config.data.crop_size)
    run, params, _ = nucjax_steps.jax_side(config, host)
    run()  # compiles
    trace_dir = FLAGS.trace_dir or tempfile.mkdtemp(prefix="nucjax_trace_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            run()
        wall = (time.perf_counter() - start) / FLAGS.steps
    print(
        f"{FLAGS.net}, batch {FLAGS.batch}, {FLAGS.size}x{FLAGS.size}, {params:,} parameters: "
        f"{wall:.3f} s per traced step (wall clock)"
    )
    report(
        max(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)), FLAGS.steps, FLAGS.top
    )


if __name__ == "__main__":
    app.run(main)
