"""`pip install .` gives the library and a working `nucjax` command, away from the checkout.

The package is installed for real (built by pip from a copy of the source) into a fresh venv;
its dependencies come from this test's own environment (a .pth file), so nothing is
downloaded and the test takes seconds, not an install of JAX and TensorFlow.
"""

import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import tifffile
from PIL import Image

import nucjax
from nucjax import configs
from nucjax.data import synthetic
from tests.conftest import REPO
from tests.trained import threshold_workdir


def _run(cmd, cwd, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
        **kwargs,
    )  # fmt: skip


def _install(tmp_path):
    """A venv with nucjax pip-installed from a copy of the source; returns its bin folder."""
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the source
    shutil.copytree(REPO / "nucjax", src / "nucjax", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, check=True)
    python = venv / "bin" / "python"
    site = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path
    )
    deps = sysconfig.get_paths()["purelib"]  # this environment's packages, after the venv's own
    (tmp_path / site.stdout.strip() / "nucjax_test_deps.pth").write_text(deps + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    done = _run([*pip, "--no-build-isolation", src], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def test_pip_install_gives_the_nucjax_command(tmp_path):
    bin_dir = _install(tmp_path)
    where = _run(
        [bin_dir / "python", "-c", "import nucjax, nucjax.configs as c; "
         "print(nucjax.__file__); print(c.config_file('unet:best'))"],
        tmp_path,
    )  # fmt: skip
    package, config = where.stdout.split()
    installed = str(tmp_path / "venv")
    assert package.startswith(installed) and config.startswith(installed), where.stdout
    assert config.endswith(os.path.join("nucjax", "configs", "unet.py:best"))

    done = _run([bin_dir / "nucjax", "--help"], tmp_path)  # exit code 1, as absl's --help
    assert "nucjax export --workdir=" in done.stdout and "--checkpoint_step" in done.stdout

    # export, then predict with the bundle: the labels of the Python API
    threshold_workdir(tmp_path / "work")
    image = synthetic.synthetic_example(np.random.default_rng(5), (90, 70), False, colour="grey")[0]
    Image.fromarray(image).save(tmp_path / "cells.png")
    nucjax_cmd = [bin_dir / "nucjax"]
    done = _run([*nucjax_cmd, "export", "--workdir=work", "--output=model.nucjax"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "simple_cnn model, checkpoint step 7" in done.stdout
    done = _run([*nucjax_cmd, "predict", "--workdir=model.nucjax", "--input=cells.png"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 images segmented, 0 skipped (checkpoint step 7)" in done.stdout
    labels = tifffile.imread(tmp_path / "model_predictions" / "cells_labels.tif")
    expected, _ = nucjax.load(str(tmp_path / "work")).segment(image)
    assert expected.max() >= 1
    np.testing.assert_array_equal(labels, expected)

    # a damaged bundle: exit code 1 and one line, no traceback
    data = (tmp_path / "model.nucjax").read_bytes()
    (tmp_path / "cut.nucjax").write_bytes(data[:-100])
    done = _run([*nucjax_cmd, "predict", "--workdir=cut.nucjax", "--input=cells.png"], tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("nucjax: cut.nucjax: not an intact nucjax model bundle (")
    )


def _readme_commands() -> list[list[str]]:
    """Every `nucjax ...` command in README.md's code blocks, continuation lines joined."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    blocks = text.split("```")[1::2]
    lines = [line.split("#")[0].split() for block in blocks for line in block.splitlines()]
    return [words[1:] for words in lines if words[:1] == ["nucjax"]]


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections'
def test_readme_commands_name_real_modes_flags_and_configs():
    """The README's commands as written: a mode, flags nucjax defines, configs that load."""
    from nucjax import main

    commands = _readme_commands()
    assert {c[0] for c in commands} == set(main.MODES), commands
    for command in commands:
        for arg in command[1:]:
            name, _, value = arg.removeprefix("--").partition("=")
            assert name in main.FLAGS or name.startswith("config."), (name, command)
            if name == "config":
                assert os.path.isfile(configs.config_file(value).partition(":")[0]), value
                assert main.FLAGS["config"].parser.parse(value).model.name, value
