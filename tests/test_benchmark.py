"""experiments/table1.py and nucjax.benchmark: budgets, intervals, skipping, the table."""

import json
import os
import subprocess

import numpy as np
import pytest

from experiments import table1
from nucjax import benchmark, metrics
from tests.conftest import REPO


@pytest.mark.parametrize(
    "text, variant, minutes, folder",
    [
        ("paper", "paper", 0.0, "paper"),
        ("best", "best", 0.0, "best"),
        ("minutes=30", "best", 30.0, "minutes_30"),
        (" minutes=2.5", "best", 2.5, "minutes_2.5"),
    ],
)
def test_parse_budget(text, variant, minutes, folder):
    budget = benchmark.parse_budget(text)
    assert (budget.variant, budget.max_minutes, budget.folder) == (variant, minutes, folder)


@pytest.mark.parametrize("text", ["quick", "minutes=0", "minutes=-3", "minutes=x", "minutes=nan"])
def test_parse_budget_rejects(text):
    with pytest.raises(ValueError, match="use paper, best or minutes=N"):
        benchmark.parse_budget(text)


def test_parse_networks_keeps_table_order_and_names_unknown_ones():
    assert benchmark.parse_networks("classical,unet") == ("unet", "classical")
    assert benchmark.parse_networks("") == (*benchmark.NETWORKS, "classical")
    with pytest.raises(ValueError, match="unknown vgg"):
        benchmark.parse_networks("unet,vgg")


def _mean(s):
    return s[0] / s[1]


def test_bootstrap_interval_hand_checked():
    # Two images scoring 0 and 1: a resample's mean is 0 (p 1/4), 0.5 (1/2) or 1 (1/4), so the
    # 2.5th and 97.5th percentiles are 0 and 1. A normal interval would be about [-0.19, 1.19].
    assert benchmark.bootstrap_interval([[0.0, 1.0], [1.0, 1.0]], _mean) == (0.0, 1.0)
    # Pooled ratio 0/1 and 3/3: resamples give 0, 3/4 or 1; with 40 images alike the
    # interval tightens around the pooled 30/40 = 0.75 (the mean of ratios would be 0.5).
    parts = [[0.0, 1.0], [3.0, 3.0]] * 20
    low, high = benchmark.bootstrap_interval(parts, _mean, seed=1)
    assert 0.6 < low < 0.75 < high < 0.87
    # Seeded: the same seed gives the same interval.
    assert benchmark.bootstrap_interval(parts, _mean, seed=1) == (low, high)
    assert benchmark.bootstrap_interval([[0.4, 1.0]], _mean) == (0.4, 0.4)  # one image


def _records(n=6, seed=0):
    """Image records of random label images and predictions, as the evaluators make them."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        truth = np.zeros((24, 24), np.int32)
        pred = np.zeros((24, 24), np.int32)
        for k in range(1, 4):
            y, x = rng.integers(0, 18, 2)
            truth[y : y + 5, x : x + 5] = k
            dy, dx = rng.integers(-2, 3, 2)
            pred[max(y + dy, 0) : y + dy + 5, max(x + dx, 0) : x + dx + 5] = k
        prob = np.clip((truth > 0) * 0.6 + rng.uniform(0, 0.5, truth.shape), 0, 1)
        records.append(metrics.image_record(truth, pred, prob))
    return records


def _rows(records, modality="fluorescence"):
    return [{**r["row"], "modality": modality, "sums": metrics.additive_sums(r)} for r in records]


def test_scores_from_rows_equal_the_evaluator_set_metrics():
    """Recomputed from the report's rows alone, each metric equals metrics.summarize's."""
    records = _records()
    expected = metrics.summarize(records)
    rows = json.loads(json.dumps(_rows(records)))  # through JSON, as read from eval/*.json
    for metric, key in benchmark.REPORT_KEYS.items():
        s = benchmark.score(rows, metric, n_resamples=200)
        assert s["value"] == pytest.approx(expected[key], abs=1e-12), metric
        assert s["low"] <= s["value"] <= s["high"] and s["images"] == 6


def _report(split, records, modality="fluorescence"):
    return {"split": split, "images": _rows(records, modality)}


def _fabricated_row():
    train = _report("train", _records(4, seed=1))
    fluo, histo = _records(3, seed=2), _records(2, seed=3)
    validation = {"split": "validation", "images": _rows(fluo) + _rows(histo, "histology")}
    summary = {"train_seconds": 600.0, "final_step": 100, "steps": 300, "max_minutes": 10.0}
    summary["parameters"] = 1_234_567
    summary.update(stopped_by_budget=True, device="1 x NVIDIA H200")
    config = {"train": {"batch_size": 8}}
    reports = {"train": train, "validation": validation}
    row = benchmark.table_row("unet", reports, summary, config, n_resamples=100)
    return row, train, fluo, histo, validation


def test_table_writer_puts_values_in_the_right_cells():
    row, train, fluo, histo, validation = _fabricated_row()
    table = {
        "budget": {"name": "minutes=10", "variant": "best", "max_minutes": 10.0},
        "n_resamples": 100,
        "seed": 0,
        "rows": [row],
        "failed": {},
    }
    text = benchmark.markdown_table(table)
    header = [c.strip() for c in text.splitlines()[4].strip("|").split("|")]
    cells = [c.strip() for c in text.splitlines()[-1].strip("|").split("|")]
    assert header == list(benchmark.COLUMNS)
    cell = dict(zip(header, cells, strict=True))
    everything = metrics.summarize(fluo + histo)
    assert cell["network"] == "U-Net"
    assert cell["nucjax model"] == "1.23M params, 100 of 300 steps"
    assert cell["train acc % (paper)"] == "99.75" and cell["test acc % (paper)"] == "98"
    assert cell["mean IoU % (paper)"] == "83" and cell["train min (paper, T4)"] == "238"
    train_acc = metrics.summarize(_records(4, seed=1))["map_pixel_accuracy"]
    assert cell["train acc % (nucjax)"].startswith(f"{100 * train_acc:.2f} [")
    assert cell["test acc % (nucjax)"].startswith(f"{100 * everything['map_pixel_accuracy']:.2f} [")
    assert cell["foreground IoU % (nucjax)"].startswith(
        f"{100 * everything['foreground_iou_pooled']:.2f} ["
    )
    assert cell["Keras mean IoU % (nucjax)"].startswith(
        f"{100 * everything['keras_mean_iou']:.2f} ["
    )
    assert cell["DSB score"].startswith(f"{everything['dsb_score']:.3f} [")
    assert cell["DSB histology"].startswith(f"{metrics.summarize(histo)['dsb_score']:.3f} [")
    assert cell["DSB fluorescence"].startswith(f"{metrics.summarize(fluo)['dsb_score']:.3f} [")
    assert cell["DSB brightfield"] == "-"
    assert cell["train min (nucjax)"] == "10.0 (budget)"
    assert cell["images/s"] == "1.3"  # 100 steps x 8 images / 600 s
    assert cell["device"] == "1 x NVIDIA H200"
    assert row["test_split"] == "validation"


# ------------------------------------------------------------------ skipping finished runs


class FakeRuns:
    """Stands in for the subprocesses: records each command and writes what it would."""

    def __init__(self, code=0):
        self.commands, self.code = [], code

    def __call__(self, command):
        self.commands.append(command)
        flags = dict(a.split("=", 1) for a in command if a.startswith("--") and "=" in a)
        if self.code:
            return self.code
        records = _records(3)
        if "--output" in flags:  # the classical baseline
            report = _report(flags["--split"], records)
            report["data"] = {"source": "synthetic"}
            _write(flags["--output"], report)
        elif flags.get("--mode") == "evaluate":
            step, split = flags["--checkpoint_step"], flags["--config.eval.split"]
            _write(f"{flags['--workdir']}/eval/{split}_step{step}.json", _report(split, records))
        else:
            minutes = float(flags.get("--config.train.max_minutes", 0))
            summary = {"final_step": 7, "train_seconds": 60.0, "max_minutes": minutes}
            _write(f"{flags['--workdir']}/summary.json", summary)
            config = {"data": {"source": "synthetic"}, "train": {"batch_size": 4}}
            _write(f"{flags['--workdir']}/config.json", config)
        return 0


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def _args(tmp_path, budget="minutes=5"):
    return [
        f"--budget={budget}",
        f"--workdir_root={tmp_path}/runs",
        f"--out={tmp_path}/table1",
        "--networks=unet,classical",
        "--splits=validation,test",
        "--override=--config.seed=3",
        "--n_resamples=50",
    ]


def test_rerun_skips_finished_runs(tmp_path):
    runs = FakeRuns()
    assert table1.main(_args(tmp_path), run=runs) == 0
    kinds = [(c[2] if c[1] == "-m" else "classical", c[-1]) for c in runs.commands]
    assert len(runs.commands) == 5, kinds  # train, 2 evaluations, 2 baseline splits
    train = runs.commands[0]
    assert "--config=configs/unet.py:best" in train and "--config.seed=3" in train
    assert "--config.train.max_minutes=5" in train
    assert f"--workdir={tmp_path}/runs/minutes_5/unet" in train
    evaluate = runs.commands[1]
    assert "--checkpoint_step=7" in evaluate and "--config.eval.split=validation" in evaluate
    table = json.load(open(tmp_path / "table1.json"))
    assert [r["network"] for r in table["rows"]] == ["unet", "classical"]
    assert table["rows"][0]["test_split"] == "test"  # synthetic data: test is labelled
    assert (tmp_path / "table1.md").exists() and (tmp_path / "table1.png").stat().st_size > 0

    runs.commands.clear()
    assert table1.main(_args(tmp_path), run=runs) == 0
    assert runs.commands == []  # everything finished: nothing runs again

    # A summary written under another budget is not a finished run of this one.
    summary_path = tmp_path / "runs" / "minutes_5" / "unet" / "summary.json"
    _write(str(summary_path), {"final_step": 7, "train_seconds": 60.0, "max_minutes": 9.0})
    table1.main(_args(tmp_path), run=runs)
    assert len(runs.commands) == 1 and "--config.train.max_minutes=5" in runs.commands[0]


def test_budget_is_not_an_override(tmp_path, capsys):
    with pytest.raises(SystemExit):
        table1.parse_args([*_args(tmp_path), "--override=--config.train.max_minutes=3"])
    assert "use --budget=minutes=N" in capsys.readouterr().err


def test_preempted_training_stops_the_table(tmp_path):
    assert table1.main(_args(tmp_path, "best"), run=FakeRuns(code=3)) == 3
    assert not (tmp_path / "table1.md").exists()


def test_failed_training_is_reported_not_fatal(tmp_path):
    assert table1.main(_args(tmp_path, "best"), run=FakeRuns(code=1)) == 1
    table = json.load(open(tmp_path / "table1.json"))
    assert table["failed"]["unet"] == "training exited with code 1"
    assert "Failed: unet: training exited with code 1" in open(tmp_path / "table1.md").read()


@pytest.mark.slow
def test_dry_run_through_the_real_commands(tmp_path):
    """table1 end to end: the :tiny Simple CNN on synthetic data under a 5-minute budget (it
    finishes its 2 steps first) and the baseline, through the real subprocesses; the table
    holds the evaluators' own numbers, and a rerun starts nothing."""
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    commands = []

    def run(command):
        commands.append(command)
        return subprocess.run(command, cwd=REPO, env=env, timeout=600).returncode

    args = [
        "--budget=minutes=5",
        "--variant=tiny",
        f"--workdir_root={tmp_path}/runs",
        f"--out={tmp_path}/table1",
        "--networks=simple_cnn,classical",
        "--splits=validation",
        "--n_resamples=100",
    ]
    assert table1.main(args, run=run) == 0
    assert len(commands) == 3  # train, evaluate, baseline
    runs = tmp_path / "runs" / "minutes_5"
    summary = json.load(open(runs / "simple_cnn" / "summary.json"))
    assert (summary["max_minutes"], summary["final_step"], summary["stopped_by_budget"]) == (
        5.0,
        2,
        False,
    )
    network = json.load(open(runs / "simple_cnn" / "eval" / "validation_step2.json"))
    baseline = json.load(open(runs / "classical" / "eval" / "validation.json"))
    rows = {r["network"]: r for r in json.load(open(tmp_path / "table1.json"))["rows"]}
    for name, report in (("simple_cnn", network), ("classical", baseline)):
        for metric, key in benchmark.REPORT_KEYS.items():
            value = rows[name]["scores"][metric]["value"]
            assert value == pytest.approx(report["metrics"][key], abs=1e-9), (name, metric)
    assert rows["simple_cnn"]["training"]["minutes"] == pytest.approx(summary["train_seconds"] / 60)
    commands.clear()
    assert table1.main(args, run=run) == 0 and commands == []
