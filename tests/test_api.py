"""nucjax.load / Model.segment / segment_many, model bundles (nucjax.bundle), configs by name."""

import json
import os
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest
import tifffile
from PIL import Image

import nucjax
from nucjax import bundle, configs, image_io, predict, whole_image, workdir
from nucjax.data import synthetic
from tests.conftest import REPO
from tests.trained import threshold_workdir


def _nuclei(shape, seed):
    """(H, W, 3) uint8 grey synthetic fluorescence nuclei."""
    return synthetic.synthetic_example(np.random.default_rng(seed), shape, False, colour="grey")[0]


# Each kind of array the API takes, and the file predict reads it from.
IMAGES = {
    "grey.png": _nuclei((64, 64), 0)[..., 0],
    # 16-bit, larger than the 64-px tile both ways: tiled
    "deep.tif": _nuclei((150, 97), 1)[..., 0].astype(np.uint16) * 257,
    "rgba.png": np.concatenate([_nuclei((48, 40), 2), np.full((48, 40, 1), 255, np.uint8)], -1),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(workdir, bundle path, folder of IMAGES): the hand-set threshold model of tests.trained,
    with a training summary, exported as a bundle."""
    root = tmp_path_factory.mktemp("api")
    work = str(root / "workdir")
    threshold_workdir(work)
    with open(os.path.join(work, "summary.json"), "w") as f:
        json.dump({"final_step": 7, "note": "written by the test"}, f)
    path = str(root / "model.nucjax")
    workdir.export(work, path)
    os.makedirs(root / "in")
    for name, array in IMAGES.items():
        if name.endswith(".tif"):
            tifffile.imwrite(root / "in" / name, array)
        else:
            Image.fromarray(array).save(root / "in" / name)
    return work, path, str(root / "in")


def test_segment_from_workdir_and_bundle_equals_predict(trained, tmp_path):
    """Three lines from a workdir and from its bundle give the same nuclei, and the same
    nuclei as predict (--mode=predict's code) writes for the image files."""
    work, path, folder = trained
    from_workdir, from_bundle = nucjax.load(work), nucjax.load(path)
    assert from_bundle.step == from_workdir.step == 7
    summary = predict.predict_folder(from_bundle.trained, [folder], str(tmp_path))
    assert summary["processed"] == len(IMAGES)
    for name, array in IMAGES.items():
        labels, info = from_workdir.segment(array)
        labels_b, info_b = from_bundle.segment(array)
        written = tifffile.imread(tmp_path / f"{os.path.splitext(name)[0]}_labels.tif")
        assert labels.shape == array.shape[:2] and labels.dtype == np.int32
        assert labels.max() >= 1, name  # the threshold model finds these nuclei
        np.testing.assert_array_equal(labels_b, labels)
        np.testing.assert_array_equal(written, labels)
        np.testing.assert_array_equal(info_b["scores"], info["scores"])
        assert info["scores"].shape == (labels.max(),) and info["num_nuclei"] == labels.max()
        assert info["foreground"].shape == labels.shape


def test_segment_many_yields_each_image_in_order_and_skips_bad_files(
    trained, tmp_path, monkeypatch
):
    """segment_many equals segment image by image, in the order given, a bad file between
    two images skipped, all in one run of predict's pipelined loop (network on the next image
    while this one is post-processed: whole_image.segment_images)."""
    work, path, folder = trained
    model = nucjax.load(path)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image\n")
    runs, pipelined = [], whole_image.segment_images

    def counted(spec, variables, images, eval_config, seeds=None):
        runs.append([])
        recorded = (runs[-1].append(x.shape) or x for x in images)
        return pipelined(spec, variables, recorded, eval_config, seeds)

    monkeypatch.setattr(whole_image, "segment_images", counted)
    first, *rest = sorted(IMAGES)
    inputs = [os.path.join(folder, first), str(bad), *(os.path.join(folder, n) for n in rest)]
    results = list(model.segment_many(inputs))
    assert [os.path.basename(r.path) for r in results] == sorted(IMAGES)
    assert [len(run) for run in runs] == [len(IMAGES)]
    for result in results:
        labels, info = model.segment(result.path)  # a path works as well as an array
        np.testing.assert_array_equal(result.labels, labels)
        np.testing.assert_array_equal(result.info["scores"], info["scores"])
        np.testing.assert_array_equal(result.info["foreground"], info["foreground"])


def test_segment_rejects_what_is_not_one_image(trained):
    model = nucjax.load(trained[1])
    with pytest.raises(image_io.UnsupportedImageError, match=r"image: a 4-D array"):
        model.segment(np.zeros((2, 3, 16, 16), np.uint16))
    with pytest.raises(image_io.UnsupportedImageError, match="image: 4x16 pixels"):
        model.segment(np.zeros((4, 16), np.uint8))


def test_bundle_round_trip(trained):
    """Every array, the config, the summary and the step come back as the workdir has them."""
    work, path, _ = trained
    contents = bundle.read(path)
    model = workdir.load(work)
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(model.variables))
    got = dict(jax.tree_util.tree_leaves_with_path(contents.variables))
    assert len(leaves) == len(got) > 0
    for key, value in leaves:
        assert got[key].dtype == value.dtype
        np.testing.assert_array_equal(got[key], value)
    with open(os.path.join(work, "config.json")) as f:
        assert contents.config == json.load(f)
    assert contents.summary == {"final_step": 7, "note": "written by the test"}
    assert contents.step == 7 and contents.meta["model"] == "simple_cnn"
    assert contents.manifest["nucjax_version"] == nucjax.__version__
    assert set(contents.manifest["sha256"]) == set(zipfile.ZipFile(path).namelist()) - {
        "manifest.json"
    }
    assert workdir.output_dir(path, "eval") == path.removesuffix(".nucjax") + "_eval"
    with pytest.raises(FileNotFoundError, match="bundle of checkpoint step 7 only, not 3"):
        workdir.load(path, step=3)


def test_evaluate_takes_a_bundle_and_writes_beside_it(trained):
    """The same scores from the bundle as from its workdir; the report goes beside the file."""
    from nucjax import evaluate

    work, path, _ = trained
    from_bundle, from_workdir = evaluate.evaluate(None, path), evaluate.evaluate(None, work)
    assert from_bundle["step"] == from_workdir["step"] == 7
    assert from_bundle["metrics"]["predicted_nuclei"] > 0
    assert from_bundle["metrics"] == from_workdir["metrics"]
    expected = os.path.join(path.removesuffix(".nucjax") + "_eval", "validation_step7.json")
    assert from_bundle["json"] == expected and os.path.isfile(expected)


def _rewritten(path, out, change):
    """A copy of the bundle `path` with change(name, data) -> data applied to every member
    (a valid zip: only nucjax's own checksums can tell)."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, change(name, src.read(name)))
    return str(out)


def test_damaged_bundles_give_one_line_errors(trained, tmp_path):
    _, path, _ = trained
    data = open(path, "rb").read()
    (tmp_path / "short.nucjax").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(path) as zf:  # a byte in the middle of the largest member's data
        big = max(zf.infolist(), key=lambda i: i.compress_size)
    header = 30 + len(big.filename.encode()) + len(big.extra)
    flipped = bytearray(data)
    flipped[big.header_offset + header + big.compress_size // 2] ^= 0xFF
    (tmp_path / "flipped.nucjax").write_bytes(bytes(flipped))
    weights = "variables/params/output/kernel.npy"
    edit = lambda name, d: d[:-1] + bytes([d[-1] ^ 1]) if name == weights else d  # noqa: E731
    cases = {
        "short.nucjax": "File is not a zip file",
        "flipped.nucjax": "",
        _rewritten(path, tmp_path / "edited.nucjax", edit): f"{weights} does not match its "
        "checksum",
        _rewritten(path, tmp_path / "alien.nucjax", lambda n, d: d.replace(b"nucjax-model", b"x"))
        : "format 'x'",
    }  # fmt: skip
    for name, reason in cases.items():
        damaged = str(tmp_path / name)
        with pytest.raises(bundle.BundleError) as error:
            nucjax.load(damaged)
        message = str(error.value)
        assert message.startswith(f"{damaged}: not an intact nucjax model bundle (")
        assert reason in message and "\n" not in message


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections'
def test_configs_by_name():
    """--config=unet:tiny is the shipped file; a path stays a path (configs/ re-exports)."""
    from nucjax import main

    unet_file = os.path.join(REPO, "nucjax", "configs", "unet.py")
    assert configs.config_file("unet:best") == unet_file + ":best"
    assert configs.config_file("unet") == unet_file
    assert configs.config_file(f"{REPO}/configs/unet.py:quick") == f"{REPO}/configs/unet.py:quick"
    with pytest.raises(ValueError, match="no config file 'unte' and no shipped config"):
        configs.config_file("unte:best")
    parse = main.FLAGS["config"].parser.parse
    by_name, by_path = parse("unet:tiny"), parse(f"{REPO}/configs/unet.py:tiny")
    assert by_name.model.name == "unet" and by_name.model.base_features == 4
    assert by_name.to_json() == by_path.to_json() != parse("unet:quick").to_json()


def test_the_api_imports_no_tensorflow(trained):
    """A notebook that segments with nucjax never starts TensorFlow (seconds, memory)."""
    code = (
        "import sys, numpy as np, nucjax\n"
        f"labels, info = nucjax.load({trained[1]!r}).segment(np.zeros((32, 32), np.uint8))\n"
        "assert labels.shape == (32, 32), labels.shape\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
