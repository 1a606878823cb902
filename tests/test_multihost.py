"""Two processes x 2 CPU devices (jax.distributed, gloo collectives) train exactly like one
process x 4 devices, and resume from the checkpoint they wrote together.

The two-process run is `python -m nucjax.main` launched twice with the multi-process flags:
steps 1-2 (checkpoint at 2, the end), then the same command with 4 steps, which resumes at 2.
The reference is the same config trained 4 steps in this test process, on the 4 fake devices
of the conftest. The input pipeline gives every process its rows of one global stream, so
both runs see the same global batches (tests/data/test_pipeline.py checks the rows).

Tolerance: float32 rounding, not exact. Across processes the all-reduce goes through gloo,
which adds the 4 devices' partial sums in another order than XLA's in-process all-reduce, so
gradients differ in the last bit. Measured: losses of steps 1-3 equal, step 4 differs by
7e-8 relative; parameters differ by at most 9e-8 (1-2 ulp) after 2 and 4 Adam steps, batch
statistics not at all. Allowed: losses 1e-6 relative, parameters 1e-6 absolute, evaluation
scalars 1e-3 absolute (a 1-ulp difference may flip one pixel across a 0.5 threshold: 6e-5 of
a 128 x 128 score).
The 2-process run itself is deterministic: a straight 4-step run gave the same losses bit for
bit as the resumed one.
"""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import simple_cnn
from nucjax import checkpoint, parallel, train
from tests.conftest import REPO

STEPS, FIRST_LAUNCH = 4, 2
OVERRIDES = {"checkpoint_every_steps": 2, "eval_every_steps": 100, "log_every_steps": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, num_steps: int, num_processes: int = 2) -> list[tuple]:
    """Start nucjax.main in `num_processes` processes of 2 CPU devices each.

    Returns (process, stdout path, stderr path) per process. Output goes to files, not pipes:
    a peer blocked on a full pipe would stall the other process inside a collective.
    """
    port = _free_port()
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
    )
    command = [
        sys.executable,
        "-m",
        "nucjax.main",
        "--config=configs/simple_cnn.py:tiny",
        f"--workdir={workdir}",
        f"--config.train.num_steps={num_steps}",
        *(f"--config.train.{k}={v}" for k, v in OVERRIDES.items()),
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={num_processes}",
    ]
    launched = []
    for i in range(num_processes):
        out, err = (f"{workdir}.steps{num_steps}.process{i}.{s}" for s in ("out", "err"))
        with open(out, "w") as stdout, open(err, "w") as stderr:
            process = subprocess.Popen(
                [*command, f"--process_id={i}"], cwd=REPO, env=env, stdout=stdout, stderr=stderr
            )
        launched.append((process, out, err))
    return launched


def _finish(launched: list[tuple], timeout: float = 300.0) -> list[str]:
    """Wait for the processes of one launch; their stdout. Fails naming a failed process."""
    try:
        for process, _, _ in launched:
            process.wait(timeout=timeout)
    finally:
        for process, _, _ in launched:  # one left waiting for a dead peer would hang for minutes
            process.kill()
    for i, (process, _, err) in enumerate(launched):
        with open(err) as f:
            assert process.returncode == 0, f"process {i} failed:\n{f.read()[-3000:]}"
    outputs = []
    for _, out, _ in launched:
        with open(out) as f:
            outputs.append(f.read())
    return outputs


def _rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(reference workdir, two-process workdir, stdout of each launch's processes)."""
    two = str(tmp_path_factory.mktemp("two_processes"))
    launch = _start(two, FIRST_LAUNCH)
    try:  # the reference trains while the first launch starts up
        reference = str(tmp_path_factory.mktemp("one_process"))
        config = simple_cnn.get_config("tiny")
        config.train.num_steps = STEPS
        config.train.update(OVERRIDES)
        train.train_and_evaluate(config, reference)
    finally:
        first = _finish(launch)
    second = _finish(_start(two, STEPS))
    return reference, two, (first, second)


def test_two_processes_log_the_same_steps_as_one(runs):
    reference, two, _ = runs
    expected, got = _rows(reference), _rows(two)
    # process 0 alone writes: each step's row appears once (two writers would double them)
    train_steps = [r["step"] for r in got if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 4]
    # the reference evaluates at its end (4), the two-process run at the end of each launch
    evaluation_at_2 = [r for r in got if r["step"] == FIRST_LAUNCH and r["split"] != "train"]
    assert {r["split"] for r in evaluation_at_2} == {"eval_train", "eval_validation"}
    got = [r for r in got if r not in evaluation_at_2]
    assert [(r["step"], r["split"], sorted(r)) for r in got] == [
        (r["step"], r["split"], sorted(r)) for r in expected
    ]
    for a, b in zip(got, expected, strict=True):
        tolerance = {"rel": 1e-6} if a["split"] == "train" else {"abs": 1e-3}
        assert a == pytest.approx(b, **tolerance), (a["step"], a["split"])


def test_two_processes_end_with_the_same_parameters_as_one(runs):
    reference, two, _ = runs
    for step in (FIRST_LAUNCH, STEPS):
        want, _, _ = checkpoint.restore_variables(os.path.join(reference, "checkpoints"), step)
        got, meta, _ = checkpoint.restore_variables(os.path.join(two, "checkpoints"), step)
        assert meta["model"] == "simple_cnn"
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=0, atol=1e-6), got, want)


def test_the_second_launch_resumed_and_only_process_0_reported(runs):
    _, two, (first, second) = runs
    with open(os.path.join(two, "summary.json")) as f:
        summary = json.load(f)
    assert summary["resumed_from"] == FIRST_LAUNCH and summary["steps"] == STEPS
    assert summary["devices"] == 4
    assert checkpoint.saved_steps(os.path.join(two, "checkpoints")) == [2, 4]
    for outputs in (first, second):
        assert "checkpoints:" in outputs[0]
        # process 1 prints nothing of its own. Gloo's C++ connection messages are not nucjax's;
        # its threads write them concurrently, so two can share a line and leave a blank one.
        assert re.sub(r"\[Gloo\] [^\[\n]*", "", outputs[1]).strip() == "", outputs[1]


@pytest.mark.parametrize(
    "flags, problem",
    [
        (("127.0.0.1:1234", 2, None), "--process_id missing"),
        ((None, None, 0), "--coordinator_address, --num_processes missing"),
        (("1234", 2, 0), "not HOST:PORT"),
        (("host:", 2, 0), "not HOST:PORT"),
    ],
)
def test_incomplete_multi_process_flags_are_one_clear_error(flags, problem):
    with pytest.raises(parallel.DistributedSetupError, match=problem):
        parallel.initialize_distributed(*flags)


def test_no_multi_process_flags_start_nothing():
    assert parallel.initialize_distributed() is False
    assert jax.process_count() == 1
