"""experiments/gpu_pack.py + experiments/gpu_run.sh end to end, in a Python that sees no
TensorFlow, TFDS, ml_collections, PyYAML, tqdm, roifile or matplotlib but the packed wheels
(the borrowed GPU hosts), on a small compact data set made from synthetic images."""

import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from nucjax.data import dsb2018_compact, synthetic
from tests.conftest import REPO

# What the GPU host lacks among what this venv has and nucjax (or its libraries) may import.
MISSING = (
    "tensorflow",
    "tensorflow_datasets",
    "keras",
    "tf_keras",
    "ml_collections",
    "yaml",
    "tqdm",
    "roifile",
    "matplotlib",
)
PACKED = ("ml_collections", "yaml", "tqdm", "roifile")

# sitecustomize.py on PYTHONPATH: every process of the run (table1's subprocesses too) finds
# the MISSING modules only outside site-packages (in the packed wheels) or not at all; a name
# found nowhere else is None in sys.modules, so `import` raises ImportError and
# importlib.util.find_spec gives None (etils asks it whether TensorFlow is there).
BLOCKER = textwrap.dedent(
    f"""
    import importlib.machinery, site, sys

    class HostImports:
        hidden = {{site.getusersitepackages(), *site.getsitepackages()}}
        def find_spec(self, name, path=None, target=None):
            if name not in {MISSING!r}:
                return None
            return importlib.machinery.PathFinder.find_spec(
                name, [p for p in sys.path if p not in self.hidden])

    finder = HostImports()
    for name in {MISSING!r}:
        if finder.find_spec(name) is None:
            sys.modules[name] = None
    sys.meta_path.insert(0, finder)
    """
)


def _write_split(path, seed, num, labelled):
    items = [
        (e["id"], e["image"], e["label"] if labelled else None, e["modality"])
        for e in synthetic.synthetic_examples(num, 64, seed)
    ]
    dsb2018_compact._write(path, dsb2018_compact._pack(items))


@pytest.fixture
def host(tmp_path):
    """(data_dir with compact train / validation / test splits, env of the host's Python)."""
    folder = dsb2018_compact.split_path("train", tmp_path / "data").parent
    folder.mkdir(parents=True)
    for seed, (split, num) in enumerate([("train", 8), ("validation", 4), ("test", 3)]):
        _write_split(folder / f"{split}.npz", seed, num, labelled=split != "test")
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "blocker"), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return tmp_path / "data", env


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.slow
def test_pack_then_run_without_host_packages(tmp_path, host):
    data_dir, env = host
    pack = tmp_path / "pack"
    run = subprocess.run(
        [sys.executable, "experiments/gpu_pack.py", f"--out={pack}", f"--data_dir={data_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0 and "pip download" in run.stderr:
        pytest.skip(f"no package mirror to download the wheels from: {run.stderr[-300:]}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "together:" in run.stdout
    manifest = json.loads((pack / "MANIFEST.json").read_text())
    compact = "data/dsb2018_compact/val10_seed0"
    for split in ("train", "validation", "test"):
        source = dsb2018_compact.split_path(split, data_dir)
        assert manifest[f"{compact}/{split}.npz"]["sha256"] == _sha256(source)
    wheels = sorted(n.split("/")[1].split("-")[0].lower() for n in manifest if "wheels/" in n)
    assert wheels == ["ml_collections", "pyyaml", "roifile", "tqdm"]

    # The blocker works, and the packed wheels are what provide the packed modules.
    wheel_path = ":".join(str(p) for p in sorted((pack / "wheels").glob("*.whl")))
    probe = textwrap.dedent(
        f"""
        import importlib, json
        found = {{}}
        for name in {MISSING!r}:
            try:
                found[name] = importlib.import_module(name).__file__
            except ImportError:
                found[name] = None
        print(json.dumps(found))
        """
    )
    probe_env = dict(env, PYTHONPATH=env["PYTHONPATH"] + ":" + wheel_path)
    found = subprocess.run(
        [sys.executable, "-c", probe], env=probe_env, capture_output=True, text=True, check=True
    )
    found = json.loads(found.stdout.strip().splitlines()[-1])
    for name in MISSING:
        if name in PACKED:
            assert found[name] and found[name].startswith(str(pack / "wheels")), (name, found)
        else:
            assert found[name] is None, (name, found[name])

    out = tmp_path / "out"
    run_env = dict(
        env,
        GPU_PACK=str(pack),
        PYTHON=sys.executable,
        GPU_RUN_VARIANT="tiny",
        GPU_RUN_NETWORKS="simple_cnn",
        GPU_RUN_WORKDIRS=str(tmp_path / "runs"),
    )
    run = subprocess.run(
        ["bash", "experiments/gpu_run.sh", str(out)],
        cwd=REPO,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

    table = json.loads((out / "table1.json").read_text())
    rows = {r["network"]: r for r in table["rows"]}
    assert set(rows) == {"simple_cnn"} and not table["failed"]
    assert table["budget"] == {"name": "minutes=1", "variant": "tiny", "max_minutes": 1.0}
    for row in rows.values():  # test is unlabelled: validation stands in for it
        assert row["test_split"] == "validation"
        assert 0 <= row["scores"]["dsb_score"]["value"] <= 1
    assert "| Simple CNN |" in (out / "table1.md").read_text()
    with Image.open(out / "table1.png") as plot:  # Pillow's plot: matplotlib was blocked
        assert plot.format == "PNG" and plot.size == (780, 500)
        assert len(np.unique(np.asarray(plot).reshape(-1, 3), axis=0)) > 2

    saved = json.loads((out / "runs" / "simple_cnn" / "config.json").read_text())["data"]
    assert saved["storage"] == "compact" and saved["pipeline"] == "device"
    assert saved["data_dir"] == str(pack / "data") and saved["source"] == "dsb2018"

    with gzip.open(out / "submissions" / "simple_cnn.csv.gz", "rt") as f:
        rows = list(csv.reader(io.StringIO(f.read())))
    assert rows[0] == ["ImageId", "EncodedPixels"]
    test_ids = {e["id"] for e in dsb2018_compact.examples("test", data_dir=data_dir)}
    assert {r[0] for r in rows[1:]} == test_ids
    summary = json.loads((out / "submissions" / "simple_cnn_summary.json").read_text())
    assert summary["processed"] == 3
    assert "capped at 1 training minutes" in (out / "gpu_run.log").read_text()


def test_plain_plot_puts_points_and_baseline_where_they_belong(tmp_path):
    """Pillow's plot (no matplotlib): a network at 1 minute, DSB 0.5 (x axis to 1.1 minutes,
    y 0..1 over pixels 40..450 of the 500-pixel height) and a baseline at 0.25."""
    sys.path.insert(0, REPO)
    from experiments import table1

    def row(name, value, minutes):
        training = None if minutes is None else {"minutes": minutes}
        score = {"value": value, "low": value - 0.05, "high": value + 0.05}
        return {
            "name": name,
            "test_split": "validation",
            "scores": {"dsb_score": score},
            "training": training,
        }

    table = {"budget": {"name": "paper"}, "rows": [row("U-Net", 0.5, 1.0), row("base", 0.25, None)]}
    path = table1.write_plain_plot(str(tmp_path / "plot.png"), table)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    left, right, top, bottom = 70, 760, 40, 450
    x = round(left + (right - left) / 1.1)
    assert tuple(pixels[round(bottom - (bottom - top) * 0.5), x]) == (31, 119, 180)
    assert tuple(pixels[round(bottom - (bottom - top) * 0.25), left + 5]) == (128, 128, 128)
    assert tuple(pixels[round(bottom - (bottom - top) * 0.75), x]) == (255, 255, 255)
