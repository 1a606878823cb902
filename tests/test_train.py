"""The trainer end to end on tiny configs and 4 fake CPU devices."""

import glob
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mask_rcnn, resnet, simple_cnn, unet
from nucjax import (
    checkpoint,
    config_checks,
    evaluators,
    models,
    optim,
    outputs,
    parallel,
    train,
    workdir,
)
from nucjax.data import pipeline
from tests.conftest import REPO
from tests.test_reporting import event_images

SEMANTIC = {"simple_cnn": simple_cnn, "unet": unet}


def tiny(module, **train_overrides):
    config = module.get_config("tiny")
    for k, v in train_overrides.items():
        setattr(config.train, k, v)
    return config


def _flat(config) -> dict:
    return {
        f"{section}.{k}": v
        for section, fields in json.loads(config.to_json()).items()
        if isinstance(fields, dict)
        for k, v in fields.items()
    }


@pytest.mark.parametrize("module", [simple_cnn, unet, resnet, mask_rcnn])
def test_variants_are_declared_and_each_means_something(module):
    """Every declared variant builds its network and differs from the paper settings; an
    undeclared one (a typo, or :tuned where nothing is tuned) is an error naming the real ones."""
    assert module.VARIANTS[0] == "paper" and module.get_config("").to_json() == (
        module.get_config("paper").to_json()
    )
    paper = _flat(module.get_config())
    for variant in module.VARIANTS[1:]:
        config = module.get_config(variant)
        assert config.model.name == module.__name__.split(".")[-1]
        assert _flat(config) != paper, variant
    with pytest.raises(ValueError, match="unknown config variant 'quik'; this config has paper"):
        module.get_config("quik")
    if "tuned" not in module.VARIANTS:
        with pytest.raises(ValueError, match="'tuned'"):
            module.get_config("tuned")


def test_simple_cnn_quick_uses_the_settings_that_learn():
    """The paper's sigmoid hidden layers stay at "all background" (experiments/README.md)."""
    quick, tuned = simple_cnn.get_config("quick"), simple_cnn.get_config("tuned")
    for config in (quick, tuned):
        assert config.model.hidden_activation == "relu" and config.optim.learning_rate == 1e-3
    assert simple_cnn.get_config().model.hidden_activation == "sigmoid"


def test_table2_values():
    """The paper's Table 2, exactly as the default (paper) configs hold it."""
    want = {
        simple_cnn: (15, 32, "adam", 0.1),
        resnet: (40, 10, "adadelta", 0.1),
        unet: (20, 16, "adam", 0.01),
        mask_rcnn: (30, 16, "sgd", 0.01),
    }
    for module, (epochs, batch, opt, lr) in want.items():
        c = module.get_config()
        got = (c.train.num_epochs, c.train.batch_size, c.optim.name, c.optim.learning_rate)
        assert got == (epochs, batch, opt, lr), module.__name__
    assert simple_cnn.get_config().model.output_activation == "sigmoid"
    assert unet.get_config().model.hidden_activation == "elu"
    assert unet.get_config().model.output_activation == "sigmoid"


def test_paper_runs_checkpoint_before_the_end():
    """603 training images (670 less the 67 validation ones): at the old default of 1000 the
    paper U-Net (760 steps) and Simple CNN (285) saved nothing until their last step."""
    for module in (simple_cnn, unet, resnet, mask_rcnn):
        config = module.get_config()
        assert 0 < config.train.checkpoint_every_steps < train.total_steps(config, 603)
    config = unet.get_config()
    config.train.checkpoint_every_steps = 1000  # the paper's interval stays available
    config_checks.check_training(config, models.build(config).stride)


def test_optimizers_map_to_optax():
    """adadelta / sgd+momentum / adam follow optax's own update rules for one step."""
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 0.25])}
    for name, ref in {
        "adam": lambda c: __import__("optax").adam(c.learning_rate, eps=c.eps),
        "adadelta": lambda c: __import__("optax").adadelta(c.learning_rate, rho=c.rho, eps=c.eps),
        "sgd": lambda c: __import__("optax").sgd(c.learning_rate, momentum=c.momentum),
    }.items():
        c = unet.get_config().optim
        c.name = name
        tx, want = optim.make_optimizer(c, 100), ref(c)
        got, _ = tx.update(grads, tx.init(params), params)
        expected, _ = want.update(grads, want.init(params), params)
        np.testing.assert_allclose(got["w"], expected["w"], rtol=1e-6)


def test_freeze_until_holds_frozen_leaves_then_releases():
    c = unet.get_config().optim
    c.name, c.learning_rate = "sgd", 1.0
    c.momentum = 0.0
    params = {"backbone": jnp.ones(2), "head": jnp.ones(2)}
    frozen = lambda p: {"backbone": True, "head": False}  # noqa: E731
    tx = optim.make_optimizer(c, 10, frozen, freeze_steps=2)
    state = tx.init(params)
    grads = {"backbone": jnp.ones(2), "head": jnp.ones(2)}
    moved = []
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        moved.append((float(updates["backbone"][0]), float(updates["head"][0])))
    assert moved == [(0.0, -1.0), (0.0, -1.0), (-1.0, -1.0)]


def test_batch_size_not_divisible_is_a_clear_error(tmp_path):
    config = tiny(unet, batch_size=6)
    with pytest.raises(ValueError, match="batch_size=6 is not divisible by the 4 devices"):
        train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("name", ["simple_cnn", "unet"])
def test_tiny_trains_two_steps_and_writes_reports(name, tmp_path):
    summary = train.train_and_evaluate(SEMANTIC[name].get_config("tiny"), str(tmp_path))
    assert summary["steps"] == 2 and summary["devices"] == 4
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
    assert {"eval_train", "eval_validation"} <= {r["split"] for r in rows}
    assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")
    final = summary["final_eval"]
    assert final["validation"]["num_images"] == 8 and "dsb_score" in final["validation"]
    assert final["train"]["num_images"] == 4 and "dsb_score" not in final["train"]  # pixel only
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    assert checkpoint.Checkpointer(summary["checkpoints"], every_steps=1, keep=1).latest_step() == 2
    # TensorBoard shows the first eval.summary_images validation images, the truth outlined
    # beside the prediction (64 x 64 synthetic images: 64 x 132 figures).
    config = SEMANTIC[name].get_config("tiny")
    images = event_images(str(tmp_path))
    assert sorted(images) == [f"eval_validation/outlines/{i}" for i in range(3)]
    first = images["eval_validation/outlines/0"]
    assert [step for step, _ in first] == [2] and first[0][1].shape == (64, 132, 3)
    _, image, label, _ = next(evaluators.labelled_images(config.data, "validation"))
    np.testing.assert_array_equal(first[0][1][:, :64], outputs.overlay(image, label))


class Interrupt(Exception):
    pass


def _interrupting(iterator, after: int):
    for i, batch in enumerate(iterator):
        if i == after:
            raise Interrupt
        yield batch


def _restored_params(workdir, config):
    spec = models.build(config)
    mesh = parallel.make_mesh()
    tx = optim.make_optimizer(config.optim, 10)
    template = train.init_state(spec, tx, config, mesh)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), every_steps=1, keep=3)
    state, step = ckpt.restore(template, checkpoint.describe(config.model.name, template.params))
    host = jax.device_get(state)
    return step, host.params, host.batch_stats, host.opt_state


def _resume_config():
    """The tiny U-Net with batch norm and dropout: batch statistics must come back from the
    checkpoint and dropout keys must replay."""
    config = tiny(unet, num_steps=6, checkpoint_every_steps=3, eval_every_steps=100)
    config.model.batch_norm = True
    return config


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """(step, params, batch_stats, opt_state) after 6 uninterrupted steps of _resume_config."""
    config = _resume_config()
    workdir = str(tmp_path_factory.mktemp("straight"))
    train.train_and_evaluate(config, workdir)
    return _restored_params(workdir, config)


def _assert_same_state(a, b, exact: bool):
    assert a[0] == b[0] == 6
    for x, y in zip(a[1:], b[1:], strict=True):
        if exact:
            jax.tree.map(np.testing.assert_array_equal, x, y)
        else:
            jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7), x, y)


def test_resume_equals_straight_through(straight_run, tmp_path):
    """6 steps straight == 3 steps, a crash at step 5, a re-run of the same command; step 4,
    logged before the crash and trained again, has one row in metrics.jsonl."""
    config, resumed = _resume_config(), str(tmp_path / "resumed")
    batches = pipeline.train_batches(config.data, batch_size=4, seed=config.seed)
    with pytest.raises(Interrupt):
        train.train_and_evaluate(config, resumed, batches=_interrupting(batches, after=4))
    assert _restored_params(resumed, config)[0] == 3
    summary = train.train_and_evaluate(config, resumed)
    assert summary["resumed_from"] == 3
    _assert_same_state(straight_run, _restored_params(resumed, config), exact=False)
    rows = [json.loads(line) for line in open(os.path.join(resumed, "metrics.jsonl"))]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]


def _signalling(iterator, at: int, signum: int):
    """The batches of `iterator`; sends `signum` to this process while yielding batch `at`."""
    for i, batch in enumerate(iterator):
        if i == at:
            os.kill(os.getpid(), signum)
        yield batch


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_the_step_in_flight_and_resume_is_exact(
    signum, straight_run, tmp_path, request
):
    """A signal while step 2's batch is read: step 2 completes, is checkpointed (and nothing
    else: the periodic checkpoint would be step 3), training stops with Preempted, the handlers
    are given back, and re-running ends bit-identical to 6 uninterrupted steps."""
    config, workdir = _resume_config(), str(tmp_path / "preempted")
    if signal.getsignal(signum) == signal.SIG_IGN:
        # A shell starts background jobs (nohup, `&`) with SIGINT ignored, and nucjax rightly
        # leaves an ignored signal alone; the test needs it delivered, as in a terminal.
        signal.signal(signum, signal.default_int_handler)
        request.addfinalizer(lambda: signal.signal(signum, signal.SIG_IGN))
    before = signal.getsignal(signum)
    batches = pipeline.train_batches(config.data, batch_size=4, seed=config.seed)
    with pytest.raises(train.Preempted, match=f"{signum.name} after step 2") as stopped:
        train.train_and_evaluate(config, workdir, batches=_signalling(batches, 1, signum))
    assert (stopped.value.step, stopped.value.signum) == (2, signum)
    assert signal.getsignal(signum) is before
    assert checkpoint.saved_steps(os.path.join(workdir, "checkpoints")) == [2]
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
    summary = train.train_and_evaluate(config, workdir)
    assert summary["resumed_from"] == 2
    _assert_same_state(straight_run, _restored_params(workdir, config), exact=True)


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    """Resuming under a config that builds another network fails, naming what differs: from
    the saved config.json, or (a workdir without one) from the checkpoint's shapes."""
    train.train_and_evaluate(tiny(simple_cnn), str(tmp_path))
    with pytest.raises(workdir.ConfigMismatchError, match="model.name: 'simple_cnn' vs 'unet'"):
        train.train_and_evaluate(tiny(unet), str(tmp_path))
    relu = tiny(simple_cnn)
    relu.model.hidden_activation = "relu"  # same shapes: only the saved config can tell
    with pytest.raises(workdir.ConfigMismatchError, match="hidden_activation: 'sigmoid' vs"):
        train.train_and_evaluate(relu, str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(checkpoint.IncompatibleCheckpointError, match="holds a 'simple_cnn' model"):
        train.train_and_evaluate(tiny(unet), str(tmp_path))
    wider = tiny(simple_cnn)
    wider.model.width = 16
    with pytest.raises(checkpoint.IncompatibleCheckpointError, match="parameters differ"):
        train.train_and_evaluate(wider, str(tmp_path))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = tiny(simple_cnn, num_steps=4, checkpoint_every_steps=2, log_every_steps=1)
    good = pipeline.train_batches(config.data, batch_size=4, seed=0)

    def poisoned():
        for i, batch in enumerate(good):
            if i >= 2:
                batch = dict(batch, image=np.full_like(batch["image"], np.nan))
            yield batch

    with pytest.raises(FloatingPointError, match="last good checkpoint is step 2"):
        train.train_and_evaluate(config, str(tmp_path), batches=poisoned())
    assert _restored_params(str(tmp_path), config)[0] == 2


def _main(*args):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "nucjax.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_main_trains_and_rejects_mistyped_override(tmp_path):
    bad = _main(
        "--config=configs/unet.py:tiny",
        f"--workdir={tmp_path}/bad",
        "--config.optim.learning_rte=0.1",
    )
    assert bad.returncode != 0 and "learning_rte" in bad.stderr
    ok = _main(
        "--config=configs/unet.py:tiny",
        f"--workdir={tmp_path}/ok",
        "--config.optim.learning_rate=0.003",
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "checkpoints:" in ok.stdout
    saved = json.load(open(tmp_path / "ok" / "config.json"))
    assert saved["optim"]["learning_rate"] == 0.003
    evaluated = _main("--mode=evaluate", f"--workdir={tmp_path}/ok")  # its saved config
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "validation, step 2: dsb_score" in evaluated.stdout


def test_init_from_starts_from_a_trained_model_even_in_another_view(tmp_path):
    from tests.trained import save_checkpoint, threshold_config, threshold_workdir

    threshold_workdir(tmp_path / "trained")
    config = threshold_config()
    config.data.input_view = "inverted"  # fine-tuning may change what the network sees
    config.train.init_from = str(tmp_path / "trained")
    run = train._Run(config, str(tmp_path / "fine_tune"))
    run.close()
    state = jax.device_get(run.state)
    want = jax.device_get(workdir.load(str(tmp_path / "trained")).variables)
    for got, expected in ((state.params, want["params"]), (state.batch_stats, want["batch_stats"])):
        jax.tree.map(np.testing.assert_array_equal, got, expected)
    assert np.asarray(state.params["output"]["kernel"])[1, 1, 0, 0] == 20.0  # not a fresh init
    assert int(state.step) == 0 and run.start == 0  # the optimizer and step count start afresh
    assert all(not np.any(x) for x in jax.tree.leaves(state.opt_state) if np.ndim(x) > 0)

    # A resumed fine-tune reads its own checkpoint only: init_from may be gone by then.
    save_checkpoint(config, str(tmp_path / "resumed"), step=3)
    config.train.init_from = str(tmp_path / "nothing")
    run = train._Run(config, str(tmp_path / "resumed"))  # no error: "nothing" is never read
    run.close()
    saved = jax.device_get(workdir.load(str(tmp_path / "resumed")).variables["params"])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.state.params), saved)

    with pytest.raises(ValueError, match=r"config.train.init_from=.*nothing.*config.json"):
        train._Run(config, str(tmp_path / "fresh"))
    config.model.width = 16
    config.train.init_from = str(tmp_path / "trained")
    with pytest.raises(ValueError, match=r"config.train.init_from=.*differently shaped"):
        train._Run(config, str(tmp_path / "wider"))


def test_a_second_run_in_the_same_workdir_is_refused_before_it_writes(tmp_path):
    path = str(tmp_path / "run")
    with workdir.training_lock(path):  # as a run training there holds it
        with pytest.raises(workdir.WorkdirBusyError, match=rf"run is in use.*pid {os.getpid()}"):
            train.train_and_evaluate(tiny(unet, num_steps=1), path)
        assert sorted(os.listdir(path)) == [".training.lock"]  # no config, no checkpoint
    with workdir.training_lock(path):  # released when the holder ends
        pass
