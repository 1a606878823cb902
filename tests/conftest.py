"""Test setup: 4 fake CPU devices (set before jax is imported), and the real-data location."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()  # what nucjax.main does: CPU convolution flag, rbg PRNG

REPO = pathlib.Path(__file__).resolve().parents[1]


def dsb2018_source() -> pathlib.Path | None:
    """The real DSB 2018 files: $NUCJAX_DSB2018_SOURCE, else ../shared/data/dsb2018."""
    env = os.environ.get("NUCJAX_DSB2018_SOURCE")
    path = pathlib.Path(env) if env else REPO.parent / "shared" / "data" / "dsb2018"
    return path if (path / "stage1_train.zip").is_file() else None


@pytest.fixture(scope="session")
def dsb_source() -> pathlib.Path:
    path = dsb2018_source()
    if path is None:
        pytest.skip("real DSB 2018 files not found (set NUCJAX_DSB2018_SOURCE or ../shared)")
    return path


@pytest.fixture(scope="session")
def dsb_data_dir(dsb_source, tmp_path_factory) -> pathlib.Path:
    """A TFDS data_dir holding the real DSB 2018 set built once per session (default split)."""
    from nucjax.data import dsb2018

    data_dir = tmp_path_factory.mktemp("dsb2018_tfds")
    dsb2018.prepare(data_dir=data_dir, source=str(dsb_source))
    return data_dir
