"""Checkpoint integrity: damaged checkpoints are named and skipped (training) or refused
(evaluate, predict); temporary folders of killed saves are removed."""

import functools
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import zlib

import jax
import numpy as np
import pytest

from configs import simple_cnn
from nucjax import checkpoint, models, optim, parallel, reporting, train, workdir
from tests.conftest import REPO

# A failed orbax read leaves tensorstore callbacks for a closed event loop (see nucjax.runtime).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _config():
    config = simple_cnn.get_config("tiny")
    config.train.num_steps = 4
    config.train.checkpoint_every_steps = 2
    config.train.eval_every_steps = 100  # evaluate once, at the end
    return config


@functools.cache
def _template():
    """(a TrainState shaped like _config()'s, its describe()); built once: init compiles."""
    config = _config()
    spec = models.build(config)
    tx = optim.make_optimizer(config.optim, 10)
    state = train.init_state(spec, tx, config, parallel.make_mesh())
    return state, checkpoint.describe(config.model.name, state.params)


def _host_state(directory, step=None):
    template, meta = _template()
    ckpt = checkpoint.Checkpointer(directory, every_steps=1, keep=5)
    state, restored = ckpt.restore(template, meta, step)
    ckpt.close()
    return restored, jax.device_get(state)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(workdir with checkpoints 2 and 4, the state of step 2, the state of step 4)."""
    config, path = _config(), str(tmp_path_factory.mktemp("trained"))
    train.train_and_evaluate(config, path)
    directory = workdir.checkpoint_dir(path)
    assert checkpoint.saved_steps(directory) == [2, 4]
    return path, _host_state(directory, 2)[1], _host_state(directory, 4)[1]


def _array_files(step_dir) -> list[str]:
    """The files of array bytes that orbax wrote for the `state` item of a step."""
    return glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)


def _flip_8_bytes_in(path):
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    open(path, "wb").write(bytes(data))


def _flip_8_bytes(step_dir):
    for path in _array_files(step_dir):  # tiny arrays share files; flip whichever is read
        _flip_8_bytes_in(path)


def _truncate(step_dir):
    for path in _array_files(step_dir):
        os.truncate(path, os.path.getsize(path) // 2)


def _delete_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _overwrite_meta(step_dir):
    path = os.path.join(step_dir, "meta", "metadata")
    text = open(path).read()
    open(path, "w").write(text[: len(text) // 2])  # a write cut short


def _delete_meta(step_dir):
    shutil.rmtree(os.path.join(step_dir, "meta"))  # the item that holds the checksums


DAMAGE = {
    "flipped_bytes": _flip_8_bytes,
    "truncated": _truncate,
    "no_METADATA": _delete_metadata,
    "meta_overwritten": _overwrite_meta,
    "meta_missing": _delete_meta,
}


def _damaged_copy(trained, tmp_path, how) -> str:
    path = str(tmp_path / "copy")
    shutil.copytree(trained[0], path)
    DAMAGE[how](os.path.join(workdir.checkpoint_dir(path), "4"))
    return path


def _assert_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_latest_is_named_and_the_previous_restored(trained, tmp_path, how, caplog):
    """The newest checkpoint damaged five ways: restore warns naming it, sets it aside and
    returns step 2 exactly (the old code restored garbage silently or raised from tensorstore)."""
    directory = workdir.checkpoint_dir(_damaged_copy(trained, tmp_path, how))
    with caplog.at_level(logging.WARNING):
        step, state = _host_state(directory)
    assert step == 2
    _assert_equal(state, trained[1])
    named = [r.getMessage() for r in caplog.records if f"{directory}/4 is damaged" in r.message]
    assert named, [r.getMessage() for r in caplog.records]
    assert sorted(os.listdir(directory)) == ["2", "4.damaged"]


def test_training_resumes_from_the_intact_checkpoint(trained, tmp_path):
    """A flipped byte in step 4: training restarts from step 2 and ends with step 4's
    parameters equal to the undamaged run's; metrics.jsonl holds each step once."""
    path = _damaged_copy(trained, tmp_path, "flipped_bytes")
    summary = train.train_and_evaluate(_config(), path)
    assert summary["resumed_from"] == 2
    _assert_equal(_host_state(workdir.checkpoint_dir(path))[1], trained[2])
    rows = [json.loads(line) for line in open(os.path.join(path, "metrics.jsonl"))]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if r["split"] == "eval_validation"] == [4]


@pytest.mark.parametrize("how", ["flipped_bytes", "truncated", "meta_overwritten"])
def test_evaluate_and_predict_refuse_a_damaged_checkpoint(trained, tmp_path, how):
    """workdir.load (evaluate, predict) names the damaged step folder in one line; an intact
    step still loads and equals what was saved."""
    path = _damaged_copy(trained, tmp_path, how)
    where = os.path.join(workdir.checkpoint_dir(path), "4")
    with pytest.raises(checkpoint.DamagedCheckpointError, match=f"{where} is damaged") as e:
        workdir.load(path)
    assert "\n" not in str(e.value) and "--checkpoint_step" in str(e.value)
    intact = workdir.load(path, step=2)
    _assert_equal(jax.device_get(intact.variables["params"]), trained[1].params)


def test_main_prints_one_line_for_a_damaged_checkpoint(trained, tmp_path):
    path = _damaged_copy(trained, tmp_path, "flipped_bytes")
    done = subprocess.run(
        [sys.executable, "-m", "nucjax.main", "--mode=evaluate", f"--workdir={path}"],
        cwd=REPO,
        env=dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("nucjax: checkpoint ") and "/checkpoints/4 is damaged: " in last


def _toy_state(seed: int) -> dict:
    # 16 KiB of random values: stored in a data file of its own, where orbax reads a flipped
    # byte back without any error.
    w = np.random.default_rng(seed).standard_normal((64, 64)).astype(np.float32)
    return {"params": {"w": w}, "batch_stats": {}}


def _toy_checkpoints(directory, steps):
    ckpt = checkpoint.Checkpointer(str(directory), every_steps=1, keep=5)
    for step in steps:
        ckpt.save(step, _toy_state(step), {"model": "toy", "param_shapes": {}})
    ckpt.close()


def test_a_flipped_byte_that_reads_back_is_caught_by_the_checksum(tmp_path, caplog):
    """Silent corruption: orbax reads the flipped array without complaint (the old code
    returned it); the CRC32 written with it names the array."""
    _toy_checkpoints(tmp_path, [1, 2])
    _flip_8_bytes_in(max(_array_files(tmp_path / "2"), key=os.path.getsize))
    match = f"{tmp_path}/2 is damaged: array params/w does not match the checksum"
    with pytest.raises(checkpoint.DamagedCheckpointError, match=match):
        checkpoint.restore_variables(str(tmp_path))
    ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1, keep=5)
    with caplog.at_level(logging.WARNING):
        state, step = ckpt.restore(_toy_state(0), {"model": "toy", "param_shapes": {}})
    assert step == 1
    _assert_equal(jax.device_get(state), _toy_state(1))
    assert any(match in r.getMessage() for r in caplog.records)


def test_every_checkpoint_damaged_is_an_error(tmp_path):
    """No silent fresh start over damaged checkpoints, and nothing is moved."""
    _toy_checkpoints(tmp_path, [1, 2])
    _truncate(tmp_path / "1")
    _delete_meta(tmp_path / "2")
    ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1, keep=5)
    with pytest.raises(checkpoint.DamagedCheckpointError, match=r"steps \[1, 2\] are damaged"):
        ckpt.restore(_toy_state(0), {"model": "toy", "param_shapes": {}})
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_stale_temporary_folders_are_removed(tmp_path, caplog):
    """A save killed mid-write leaves STEP.orbax-checkpoint-tmp-*; opening the folder removes
    it (and nothing else), and saving that step afterwards works."""
    meta = {"model": "toy", "param_shapes": {}}
    _toy_checkpoints(tmp_path, [1])
    stale = tmp_path / "2.orbax-checkpoint-tmp-1764495000000000"
    (stale / "state").mkdir(parents=True)
    (stale / "state" / "_METADATA").write_text("{")
    with caplog.at_level(logging.WARNING):
        ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1, keep=3)
    assert sorted(os.listdir(tmp_path)) == ["1"]
    assert any(str(stale) in r.getMessage() for r in caplog.records)
    ckpt.save(2, _toy_state(2), meta)
    ckpt.close()
    assert checkpoint.saved_steps(str(tmp_path)) == [1, 2]
    _assert_equal(checkpoint.restore_variables(str(tmp_path))[0], _toy_state(2))


def test_checkpoint_without_checksums_still_loads(tmp_path, caplog):
    """Checkpoints written before checksums existed load, with a warning that says so."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(str(tmp_path))
    manager.save(
        3,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_toy_state(3)),
            meta=ocp.args.JsonSave({"model": "toy", "param_shapes": {"w": [64, 64]}}),
        ),
    )
    manager.close()
    with caplog.at_level(logging.WARNING):
        variables, _, step = checkpoint.restore_variables(str(tmp_path))
    assert step == 3
    _assert_equal(jax.device_get(variables), _toy_state(3))
    assert any("no checksums" in r.getMessage() for r in caplog.records)


def test_array_checksums_name_each_leaf_by_its_path():
    """The CRC32 of each leaf's bytes, under the same '/'-joined name on save (a TrainState:
    attributes, optax tuples) and on restore (dicts)."""
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    sums = checkpoint.array_checksums({"params": {"w": w}, "opt": (np.int32(7),)})
    assert sums == {"params/w": zlib.crc32(w.tobytes()), "opt/0": zlib.crc32(b"\x07\0\0\0")}
    assert checkpoint.checksum_mismatches(sums, {"params": {"w": w}}) == []
    assert checkpoint.checksum_mismatches(sums, {"params": {"w": w + 1}}) == ["params/w"]


def test_metric_rows_past_the_restored_step_are_dropped(tmp_path):
    """Steps past the checkpoint are trained again: their old rows go, as does a row a kill
    cut short; rows up to the step stay as they were."""
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "split": "train", "loss": s / 10} for s in (1, 2, 3, 4)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text + '{"step": 5, "spl')
    writer = reporting.MetricWriter(str(tmp_path), start_step=2)
    writer.write(3, "train", {"loss": 0.5})
    writer.close()
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == [*rows[:2], {"step": 3, "split": "train", "loss": 0.5}]
    assert reporting.drop_rows_after(str(tmp_path / "absent.jsonl"), 0) == 0


def test_parameter_count_is_read_back_from_a_saved_checkpoint(trained):
    """The trainer's summary, the saved meta and the parameters themselves agree."""
    path, _, state4 = trained
    expected = sum(x.size for x in jax.tree.leaves(state4.params))
    meta = checkpoint.read_meta(workdir.checkpoint_dir(path), 4)
    assert checkpoint.parameter_count(meta) == expected > 0
    with open(os.path.join(path, "summary.json")) as f:
        assert json.load(f)["parameters"] == expected
