"""The command line as users and job scripts meet it: `python -m nucjax.main` in a subprocess.

Exit codes and what reaches stderr are the contract here (nucjax.main's docstring): an expected
user error is one line and code 1, never a traceback; SIGTERM during training saves a
checkpoint, prints one line and exits 3, and running the command again resumes from it.

Timeouts are generous (600 s) because they only guard against a hang: on a loaded 2-core
machine starting a subprocess (importing JAX and TensorFlow, compiling) took up to 4 minutes.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

from nucjax import checkpoint, preemption
from tests.conftest import REPO

TINY = "--config=configs/simple_cnn.py:tiny"


def _command(*args) -> list[str]:
    return [sys.executable, "-m", "nucjax.main", *args]


def _env() -> dict:
    # One CPU device (not the 4 fake ones of conftest): the tiny batch of 4 divides it.
    return dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(*args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600
    )


# The log records of absl, TensorFlow and XLA: a severity letter and digits, or the C++
# logger's notice that it is not initialised.
LOG_LINE = re.compile(r"[IWEF]\d{4}|WARNING: All log messages before absl::InitializeLog")


def _nucjax_lines(stderr: str) -> list[str]:
    """stderr without blank lines and log records: what nucjax itself printed."""
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    """What nucjax printed for an expected user error, after checking it exited 1 without a
    traceback."""
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return _nucjax_lines(done.stderr)


def test_config_error_is_one_line_and_exit_code_1(tmp_path):
    done = _run(TINY, f"--workdir={tmp_path}", "--config.optim.learning_rate=-0.5")
    assert _error_lines(done) == [
        "nucjax: config.optim.learning_rate=-0.5 is out of range: it must be > 0"
    ], done.stderr[-2000:]
    assert not os.path.exists(tmp_path / "checkpoints")  # refused before anything was built


def test_misspelt_or_configless_override_is_one_line_naming_it(tmp_path):
    done = _run(TINY, f"--workdir={tmp_path}", "--config.train.max_minute=3")
    assert _error_lines(done) == [
        "nucjax: --config.train.max_minute: the config has no field 'max_minute'. "
        'Did you mean "max_minutes" instead of "max_minute"?'
    ], done.stderr[-2000:]
    done = _run("--mode=evaluate", f"--workdir={tmp_path}", "--config.eval.min_size=20")
    assert _error_lines(done) == [
        "nucjax: --config.eval.min_size overrides a field of --config, which is not given: add "
        "the run's config (e.g. --config=unet:best; evaluate and predict refuse one that "
        "builds another network)"
    ], done.stderr[-2000:]


def test_damaged_dataset_build_is_one_line_and_exit_code_1(tmp_path):
    """A flipped byte in a built DSB record file (a fake set built here, never the real one):
    one line naming the file and how to rebuild, not a DataLossError traceback."""
    from nucjax.data import dsb2018
    from tests.data.test_dsb2018 import write_fake_source

    source = tmp_path / "source"
    sums = write_fake_source(source)["checksums"]
    builder = dsb2018.prepare(data_dir=tmp_path / "tfds", source=str(source), checksums=sums)
    (record,) = (tmp_path / "tfds").glob("dsb2018/*/*/dsb2018-train.tfrecord*")
    data = bytearray(record.read_bytes())
    data[len(data) // 2] ^= 0xFF
    record.write_bytes(data)
    done = _run(
        TINY,
        f"--workdir={tmp_path / 'run'}",
        "--config.data.source=dsb2018",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
    )
    (line,) = _error_lines(done)
    assert line.startswith(f"nucjax: {record}: damaged dsb2018 build (corrupted record at ")
    assert line.endswith(f"rebuild it: `rm -r {builder.data_dir}`, then run again "
                         "(the build is redone from the fetched files)")  # fmt: skip


def _wait_for_training(workdir, process, timeout=600.0) -> None:
    """Until metrics.jsonl holds a training row: the loop runs and the handlers are in place."""
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.communicate()[1][-2000:]}")
        if os.path.exists(metrics) and '"split": "train"' in open(metrics).read():
            return
        time.sleep(0.2)
    raise AssertionError("no training step within the timeout")


def test_sigterm_exits_3_with_one_line_and_rerun_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    # Long enough that SIGTERM lands mid-run; no evaluation or periodic checkpoint in the way.
    args = [
        TINY,
        f"--workdir={workdir}",
        "--config.train.num_steps=100000",
        "--config.train.eval_every_steps=100000",
    ]
    process = subprocess.Popen(
        _command(*args), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        _wait_for_training(workdir, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == preemption.EXIT_CODE == 3, stderr[-2000:]
    assert "Traceback" not in stderr
    message = [line for line in _nucjax_lines(stderr) if line.startswith("nucjax:")]
    assert len(message) == 1, stderr[-2000:]
    steps = checkpoint.saved_steps(os.path.join(workdir, "checkpoints"))
    assert len(steps) == 1 and steps[0] >= 1  # the step in flight, and nothing else
    stopped = steps[0]
    assert message[0] == (
        f"nucjax: stopped by SIGTERM after step {stopped}; checkpoint saved in "
        f"{workdir}/checkpoints/{stopped}. Run the same command again to resume."
    )
    # The same command again (told to end two steps later, so that the test ends) resumes.
    again = _run(*args[:2], f"--config.train.num_steps={stopped + 2}")
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["resumed_from"] == stopped and summary["steps"] == stopped + 2
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    assert train_steps == list(range(1, stopped + 3))  # no step lost or repeated
