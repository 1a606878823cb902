"""The paper's Table 1 in one command: train the four networks, evaluate them, write the table.

  python experiments/table1.py --budget=paper       # Table 2's settings exactly
  python experiments/table1.py --budget=best        # the tuned (:best) variants
  python experiments/table1.py --budget=minutes=30  # :best, 30 training minutes for every network
      [--workdir_root=runs/table1] [--networks=unet,resnet,classical]
      [--override=--config.data.data_dir=/data/tfds --override=...]
  python experiments/table1.py --budget=best --variant=tiny --workdir_root=/tmp/t1 \
      --out=/tmp/t1/table1                          # a dry run on synthetic data (seconds)

For each network (configs/<network>.py:<variant>, runs in WORKDIR_ROOT/<budget>/<network>):
  train     python -m nucjax.main --config=... --workdir=... [--config.train.max_minutes=N]
  evaluate  python -m nucjax.main --mode=evaluate ... --config.eval.split=S for S in --splits
            (test only when its labels, stage1_solution.csv, are in the data source)
then the classical baseline (experiments/classical_baseline.py) on the same splits, and writes
OUT.md, OUT.json (nucjax.benchmark: the paper's values beside nucjax's, each score with a 95 %
bootstrap interval over images) and OUT.png (DSB score against training minutes).

Each step is a subprocess, as a user would run it: a fresh process per network frees its
device memory, a crash or a diverged run costs that row only, and preemption keeps its meaning
(exit code 3: this script stops with 3; run it again). Re-running skips what is finished: a
training whose summary.json was written under this budget, an evaluation whose report of the
final checkpoint exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nucjax import benchmark, checkpoint, outputs  # noqa: E402

PREEMPTED = 3  # nucjax.preemption.EXIT_CODE, without importing jax here
SPLITS = ("train", "validation", "test")


class Preempted(Exception):
    """A training subprocess was stopped by a signal after checkpointing (exit code 3)."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", required=True, help="paper | best | minutes=N")
    parser.add_argument("--workdir_root", default="runs/table1")
    parser.add_argument("--networks", default="", help="comma-separated; default all + classical")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="a config override passed to every run, e.g. --override=--config.seed=1",
    )
    parser.add_argument("--variant", default="", help="config variant (default: the budget's)")
    parser.add_argument("--splits", default=",".join(SPLITS), help="splits to evaluate")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "table1"))
    parser.add_argument("--n_resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.budget = benchmark.parse_budget(args.budget)
    args.networks = benchmark.parse_networks(args.networks)
    args.variant = args.variant or args.budget.variant
    args.splits = [s for s in SPLITS if s in args.splits.split(",")]
    if bad := [o for o in args.override if not o.startswith("--config.")]:
        parser.error(f"--override={bad[0]!r}: overrides look like --config.FIELD=VALUE")
    if any(o.startswith("--config.train.max_minutes") for o in args.override):
        parser.error("--override=--config.train.max_minutes: use --budget=minutes=N")
    return args


def _subprocess(command: list[str]) -> int:
    print("+ " + " ".join(command), flush=True)
    return subprocess.run(command, cwd=REPO).returncode


def _parameters(workdir: str, step: int) -> int | None:
    """The parameter count that checkpoint `step` of `workdir` records; None without one."""
    try:
        meta = checkpoint.read_meta(os.path.join(workdir, "checkpoints"), step)
    except (FileNotFoundError, checkpoint.DamagedCheckpointError):
        return None
    return checkpoint.parameter_count(meta)


class Table:
    """One table1 run: the runs' folder, the commands, what is done. run(command) -> exit code."""

    def __init__(self, args: argparse.Namespace, run: Callable[[list[str]], int] = _subprocess):
        self.args, self.run = args, run
        self.root = os.path.join(os.path.abspath(args.workdir_root), args.budget.folder)
        self.failed: dict[str, str] = {}

    def _config_flags(self, network: str) -> list[str]:
        config = os.path.join("configs", f"{network}.py")
        return [f"--config={config}:{self.args.variant}", *self.args.override]

    def train(self, network: str, workdir: str) -> dict | None:
        """The finished run's summary, training first when needed; None when it failed."""
        if (summary := benchmark.finished_training(workdir, self.args.budget)) is not None:
            return summary
        command = [sys.executable, "-m", "nucjax.main", *self._config_flags(network)]
        command.append(f"--workdir={workdir}")
        if self.args.budget.max_minutes > 0:
            command.append(f"--config.train.max_minutes={self.args.budget.max_minutes:g}")
        code = self.run(command)
        if code == PREEMPTED:
            raise Preempted(f"{network} training was preempted (checkpoint saved); run again")
        summary = benchmark.finished_training(workdir, self.args.budget)
        if code != 0:
            self.failed[network] = f"training exited with code {code}"
        elif summary is None:
            self.failed[network] = f"training wrote no summary.json for this budget in {workdir}"
        return summary if code == 0 else None

    def evaluate(self, network: str, workdir: str, split: str, step: int) -> dict | None:
        path = benchmark.eval_path(workdir, split, step)
        if not os.path.exists(path):
            command = [sys.executable, "-m", "nucjax.main", "--mode=evaluate"]
            command += [f"--workdir={workdir}", f"--checkpoint_step={step}"]
            command += [*self._config_flags(network), f"--config.eval.split={split}"]
            if (code := self.run(command)) != 0:
                self.failed[f"{network} {split}"] = f"evaluation exited with code {code}"
        return benchmark.read_json(path)

    def baseline(self, split: str) -> dict | None:
        path = os.path.join(self.root, benchmark.BASELINE, "eval", f"{split}.json")
        if not os.path.exists(path):
            command = [sys.executable, os.path.join("experiments", "classical_baseline.py")]
            command += [*self._config_flags("unet"), f"--split={split}", f"--output={path}"]
            if (code := self.run(command)) != 0:
                self.failed[f"classical {split}"] = f"exited with code {code}"
        return benchmark.read_json(path)

    def _splits(self, data: dict | None) -> list[str]:
        """The requested splits, test only when labelled (data: a config's data section)."""
        labelled = data is not None and benchmark.test_split_labelled(data)
        return [s for s in self.args.splits if s != "test" or labelled]

    def row(self, network: str) -> dict:
        kw = {"seed": self.args.seed, "n_resamples": self.args.n_resamples}
        if network == benchmark.BASELINE:
            reports = {}
            for split in self.args.splits:
                data = next((r["data"] for r in reports.values()), None)
                if split != "test" or split in self._splits(data):
                    if (report := self.baseline(split)) is not None:
                        reports[split] = report
            return benchmark.table_row(network, reports, None, None, **kw)
        workdir = os.path.join(self.root, network)
        summary = self.train(network, workdir)
        config = benchmark.read_json(os.path.join(workdir, "config.json"))
        reports = {}
        if summary is not None:
            for split in self._splits(config["data"]):
                report = self.evaluate(network, workdir, split, int(summary["final_step"]))
                if report is not None:
                    reports[split] = report
        if summary is not None and "parameters" not in summary:  # trained before nucjax kept it
            summary = {**summary, "parameters": _parameters(workdir, int(summary["final_step"]))}
        return benchmark.table_row(network, reports, summary, config, **kw)

    def build(self) -> dict:
        rows = [self.row(network) for network in self.args.networks]
        budget = self.args.budget
        return {
            "budget": {
                "name": budget.name,
                "variant": self.args.variant,
                "max_minutes": budget.max_minutes,
            },
            "workdir_root": self.root,
            "overrides": self.args.override,
            "n_resamples": self.args.n_resamples,
            "seed": self.args.seed,
            "rows": rows,
            "failed": self.failed,
        }


def write_plot(path: str, table: dict) -> str:
    """DSB score (with its interval) against training minutes, one point per network; the
    baseline as a horizontal line with its band. Drawn with Pillow (write_plain_plot) where
    matplotlib is not installed (the borrowed GPU hosts; its wheels would not fit in what a
    command carries there)."""
    try:
        import matplotlib
    except ImportError:
        return write_plain_plot(path, table)

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    points, lines = plot_points(table)
    for name, value, low, high in lines:
        ax.axhline(value, color="grey", linestyle="--", label=name)
        ax.axhspan(low, high, color="grey", alpha=0.15)
    for name, minutes, value, low, high in points:
        err = [[value - low], [high - value]]
        ax.errorbar(minutes, value, yerr=err, fmt="o", capsize=4, label=name)
    held_out = {r["test_split"] for r in table["rows"] if r["test_split"]}
    ax.set_xlim(left=0)
    ax.set_xlabel("training minutes")
    ax.set_ylabel(f"DSB score ({' / '.join(sorted(held_out))}), 95 % interval")
    ax.set_title(f"Table 1, budget {table['budget']['name']}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no scored row: an empty plot, no legend
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return outputs.write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def plot_points(table: dict) -> tuple[list[tuple], list[tuple]]:
    """([(name, minutes, dsb, low, high)] of trained rows, [(name, dsb, low, high)] of rows
    without training: the baseline), rows without a DSB score left out."""
    points, lines = [], []
    for row in table["rows"]:
        dsb, training = row["scores"].get("dsb_score"), row.get("training")
        if dsb is None:
            continue
        if training is None:
            lines.append((row["name"], dsb["value"], dsb["low"], dsb["high"]))
        else:
            points.append((row["name"], training["minutes"], dsb["value"], dsb["low"], dsb["high"]))
    return points, lines


def write_plain_plot(path: str, table: dict, size: tuple[int, int] = (780, 500)) -> str:
    """write_plot's figure drawn with Pillow alone: minutes from 0, DSB score 0 to 1, points
    with interval bars and their names, the baseline as a grey line with its band."""
    from PIL import Image, ImageDraw

    points, lines = plot_points(table)
    width, height = size
    left, right, top, bottom = 70, width - 20, 40, height - 50
    x_max = max([p[1] for p in points] + [1e-9]) * 1.1
    y_max = 1.0  # DSB scores lie in [0, 1]
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)

    def xy(minutes: float, score: float) -> tuple[float, float]:
        return (
            left + (right - left) * minutes / x_max,
            bottom - (bottom - top) * score / y_max,
        )

    for name, value, low, high in lines:
        draw.rectangle([left, xy(0, high)[1], right, xy(0, low)[1]], fill=(230, 230, 230))
        draw.line([left, xy(0, value)[1], right, xy(0, value)[1]], fill="grey", width=2)
        draw.text((right - 120, xy(0, value)[1] - 14), name, fill="grey")
    for name, minutes, value, low, high in points:
        x, y = xy(minutes, value)
        draw.line([x, xy(0, low)[1], x, xy(0, high)[1]], fill="black", width=1)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(31, 119, 180))
        draw.text((x + 7, y - 7), name, fill="black")
    draw.rectangle([left, top, right, bottom], outline="black")
    for k in range(5):
        minutes, score = x_max * k / 4, y_max * k / 4
        draw.text((xy(minutes, 0)[0] - 10, bottom + 6), f"{minutes:.3g}", fill="black")
        draw.text((left - 40, xy(0, score)[1] - 6), f"{score:.2f}", fill="black")
    held_out = " / ".join(sorted({r["test_split"] for r in table["rows"] if r["test_split"]}))
    draw.text(
        (left, 12),
        f"Table 1, budget {table['budget']['name']}: DSB score "
        f"({held_out}, 95 % interval) against training minutes",
        fill="black",
    )
    draw.text(((left + right) / 2 - 40, height - 22), "training minutes", fill="black")
    return outputs.write_atomically(path, lambda tmp: image.save(tmp, format="PNG"))


def main(argv: Sequence[str] | None = None, run: Callable[[list[str]], int] = _subprocess) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    table_runner = Table(args, run)
    try:
        table = table_runner.build()
    except Preempted as e:
        print(f"table1: {e}", file=sys.stderr)
        return PREEMPTED
    import json

    outputs.write_text(args.out + ".json", json.dumps(table, indent=2) + "\n")
    outputs.write_text(args.out + ".md", benchmark.markdown_table(table))
    write_plot(args.out + ".png", table)
    print(f"table: {args.out}.md, {args.out}.json, {args.out}.png")
    for what, why in table["failed"].items():
        print(f"  failed: {what}: {why}", file=sys.stderr)
    return 1 if table["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
