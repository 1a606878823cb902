"""config.train.max_minutes: the training-time budget stops a run cleanly and holds over resumes."""

import os

import pytest

from configs import simple_cnn
from nucjax import budget, checkpoint, train
from nucjax.data import pipeline
from tests.test_train import Interrupt, _interrupting


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_clock_counts_earlier_runs_and_excludes_paused_time():
    now = FakeTime()
    timer = budget.TrainingClock(spent_s=100.0, limit_s=200.0, clock=now)
    timer.start()
    now.now = 50.0
    assert timer.spent() == 150.0 and not timer.exhausted()
    with timer.paused():  # evaluation: 1000 s that are not training
        now.now = 1050.0
    assert timer.spent() == 150.0
    now.now = 1100.0
    assert timer.spent() == 200.0 and timer.exhausted()
    timer.stop()
    now.now = 5000.0
    assert timer.spent() == 200.0
    assert not budget.TrainingClock(1e9, 0.0, now).exhausted()  # 0 = no budget


class BatchClock:
    """Fake seconds that advance 60 per batch the trainer draws: one "minute" per step."""

    def __init__(self):
        self.batches = 0

    def __call__(self):
        return 60.0 * self.batches

    def counting(self, iterator):
        for batch in iterator:
            self.batches += 1
            yield batch


def _config():
    config = simple_cnn.get_config("tiny")
    config.train.num_steps = 10
    config.train.checkpoint_every_steps = 2
    config.train.eval_every_steps = 100
    config.train.max_minutes = 4.5  # 270 fake seconds: the 5th step spends it
    config.eval.train_images, config.eval.max_images = 0, 2  # a cheap evaluation at the stop
    return config


def _run(config, workdir, start=0, interrupt_after=None):
    clock = BatchClock()
    batches = pipeline.train_batches(config.data, batch_size=4, seed=config.seed, start_step=start)
    if interrupt_after is not None:
        batches = _interrupting(batches, interrupt_after)
    summary = train.train_and_evaluate(
        config, workdir, batches=clock.counting(batches), clock=clock
    )
    return summary, clock.batches


def _saved_seconds(workdir) -> dict[int, float]:
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), every_steps=1, keep=3)
    try:
        steps = checkpoint.saved_steps(ckpt.directory)
        return {s: ckpt.saved_meta(s)["train_seconds"] for s in steps}
    finally:
        ckpt.close()


def test_budget_stops_cleanly_and_a_resumed_run_stops_at_the_same_total(tmp_path):
    config = _config()
    straight, drawn = _run(config, str(tmp_path / "straight"))
    assert (straight["final_step"], drawn, straight["stopped_by_budget"]) == (5, 5, True)
    assert straight["train_seconds"] == 300.0 and straight["final_eval"]  # evaluated at the stop
    assert _saved_seconds(str(tmp_path / "straight")) == {2: 120.0, 4: 240.0, 5: 300.0}

    # Crash while drawing step 4's batch: step 2's checkpoint (120 s spent) survives.
    workdir = str(tmp_path / "resumed")
    with pytest.raises(Interrupt):
        _run(config, workdir, interrupt_after=3)
    assert _saved_seconds(workdir) == {2: 120.0}
    resumed, drawn = _run(config, workdir, start=2)
    # A run that forgot the 120 s would train 5 more steps, to step 7.
    assert (resumed["resumed_from"], resumed["final_step"], drawn) == (2, 5, 3)
    assert _saved_seconds(workdir)[5] == 300.0

    # Budget spent: running again trains nothing at all.
    again, drawn = _run(config, workdir, start=5)
    assert (again["resumed_from"], again["final_step"], drawn) == (5, 5, 0)
    assert max(_saved_seconds(workdir)) == 5
