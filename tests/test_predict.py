"""predict: image files of every kind -> label TIFFs, probabilities, overlays, tables, CSV."""

import csv
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import roifile
import tifffile
from PIL import Image

from configs import unet
from nucjax import image_io, outputs, predict, whole_image, workdir
from nucjax.data import rle
from nucjax.data.images import network_input, to_rgb
from tests.conftest import REPO
from tests.test_image_io import links_and_subfolders, nuclei_image, write_inputs
from tests.test_outputs import _raster
from tests.trained import threshold_workdir

GOOD = ("grey", "colour", "rgba", "deep", "planar", "flat")
BAD = ("text", "dot", "stack")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    threshold_workdir(root / "workdir")
    write_inputs(str(root / "in"))
    out = str(root / "out")
    model = workdir.load(str(root / "workdir"))
    summary = predict.predict_folder(model, [str(root / "in")], out, figure_images=["deep", "nope"])
    return model, root, out, summary


def _segment(model, pixels):
    image = network_input(to_rgb(pixels), "rgb")
    return whole_image.segment_image(model.spec, model.variables, image, model.config.eval)


def _expected(model, root, name):
    """The label the model gives for an input file, computed here from its pixels."""
    return _segment(model, image_io.read_image(str(root / "in" / name)))


def test_summary_counts_processed_and_skipped(run):
    _, _, out, summary = run
    assert summary["processed"] == len(GOOD) and summary["skipped"] == len(BAD)
    assert [i["image_id"] for i in summary["images"]] == sorted(GOOD)
    reasons = {os.path.basename(s["file"]): s["reason"] for s in summary["skipped_files"]}
    assert set(reasons) == {"text.png", "dot.png", "stack.tif"}
    assert reasons["text.png"].startswith("text.png: not a readable image")
    assert "1x1 pixels" in reasons["dot.png"] and "4-D array of axes QQYX" in reasons["stack.tif"]
    assert [os.path.basename(p) for p in summary["ignored_files"]] == ["notes.txt"]
    assert summary["figures_not_found"] == ["nope"]
    assert json.load(open(os.path.join(out, "summary.json")))["skipped"] == len(BAD)
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_outputs_of_every_good_image(run):
    model, root, out, summary = run
    for item in summary["images"]:
        stem, h, w = item["image_id"], item["height"], item["width"]
        label = tifffile.imread(os.path.join(out, f"{stem}_labels.tif"))
        assert label.dtype == np.uint16 and label.shape == (h, w)
        prob = tifffile.imread(os.path.join(out, f"{stem}_prob.tif"))
        assert prob.dtype == np.float32 and prob.shape == (h, w)
        assert 0 <= prob.min() and prob.max() <= 1
        assert np.asarray(Image.open(os.path.join(out, f"{stem}_overlay.png"))).shape == (h, w, 3)
        with open(os.path.join(out, f"{stem}_nuclei.csv")) as f:
            table = list(csv.DictReader(f))
        assert len(table) == label.max() == item["nuclei"]
        assert sum(int(r["area"]) for r in table) == np.count_nonzero(label)
        assert all(0 < float(r["score"]) <= 1 for r in table)
    assert summary["images"][0]["image_id"] == "colour"
    assert {i["image_id"]: i["nuclei"] for i in summary["images"]}["flat"] == 0
    assert sum(i["nuclei"] for i in summary["images"]) > 10  # it found nuclei


def test_label_tiff_round_trips_and_submission_decodes(run):
    model, root, out, summary = run
    with open(os.path.join(out, "submission.csv")) as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"ImageId", "EncodedPixels"}
    by_id = {}
    for r in rows:
        by_id.setdefault(r["ImageId"], []).append(r["EncodedPixels"])
    assert list(by_id) == sorted(GOOD)
    assert by_id["flat"] == [""]  # no nuclei: one empty row, as Kaggle expected
    for name, stem in (("deep.tif", "deep"), ("planar.tiff", "planar"), ("grey.png", "grey")):
        p = _expected(model, root, name)
        label = tifffile.imread(os.path.join(out, f"{stem}_labels.tif"))
        np.testing.assert_array_equal(label, p.instances.label)
        decoded = rle.labels_from_rle(by_id[stem], label.shape)
        np.testing.assert_array_equal(decoded, label)
        prob = tifffile.imread(os.path.join(out, f"{stem}_prob.tif"))
        np.testing.assert_array_equal(prob, p.foreground)


def test_figure_is_written(run):
    _, _, out, summary = run
    figure = Image.open(os.path.join(out, "deep_figure.png"))
    assert figure.format == "PNG" and figure.width > 2 * 97 and figure.height > 150
    assert summary["images"][1]["outputs"]["figure"].endswith("deep_figure.png")


def test_clear_errors(tmp_path, run):
    model, root, _, _ = run
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="holds no images"):
        predict.predict_folder(model, [str(tmp_path / "empty")], str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        predict.predict_folder(model, [str(tmp_path / "missing.png")], str(tmp_path))
    with pytest.raises(workdir.ConfigMismatchError, match="model.name: 'simple_cnn' vs 'unet'"):
        workdir.load(str(root / "workdir"), unet.get_config("tiny"))
    assert not os.path.exists(tmp_path / "o" / "submission.csv")


def test_duplicate_stems_are_skipped(tmp_path, run):
    model, root, _, _ = run
    image = nuclei_image((32, 32), 5)
    Image.fromarray(image).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", image)
    summary = predict.predict_folder(model, [str(tmp_path)], str(tmp_path / "o"))
    assert summary["processed"] == 1 and "would overwrite" in summary["skipped_files"][0]["reason"]


def test_unwritable_image_is_reported_skipped_and_cleaned_up(tmp_path, run, monkeypatch, caplog):
    """A disk that fills up at grey's overlay: its label and probability TIFFs (already
    written) are removed, the other images and summary.json / submission.csv still written."""
    model, root, _, _ = run
    monkeypatch.setattr(outputs, "write_png", _failing(outputs.write_png, "grey_overlay.png"))
    inputs = [str(root / "in" / n) for n in ("grey.png", "colour.jpg", "deep.tif")]
    out = tmp_path / "o"
    with caplog.at_level("WARNING"):
        summary = predict.predict_folder(model, inputs, str(out))
    assert (summary["processed"], summary["failed"], summary["skipped"]) == (2, 1, 0)
    (failed,) = summary["failed_files"]
    assert failed["file"] == inputs[0] and failed["image_id"] == "grey"
    assert "No space left on device" in failed["reason"]
    warnings = [r.getMessage() for r in caplog.records if "grey.png" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert sorted(os.listdir(out)) == sorted(
        [f"{s}{suffix}" for s in ("colour", "deep") for suffix in outputs.IMAGE_OUTPUT_SUFFIXES[:3]]
        + [f"{s}_nuclei.csv" for s in ("colour", "deep")]
        + ["submission.csv", "summary.json"]
    )  # nothing of grey, no temporary file
    with open(out / "submission.csv") as f:
        assert {r["ImageId"] for r in csv.DictReader(f)} == {"colour", "deep"}
    saved = json.load(open(out / "summary.json"))
    assert saved["failed_files"] == summary["failed_files"]


def test_command_line_exit_code_when_some_outputs_failed(tmp_path, run, monkeypatch, capsys):
    """nucjax.main in this process (the failing writer can only be patched here): the images
    that were written are reported, the failed one by name, and the exit code is 4."""
    from absl import flags

    from nucjax import main as cli

    _, root, _, _ = run
    monkeypatch.setattr(outputs, "write_csv", _failing(outputs.write_csv, "grey_nuclei.csv"))
    inputs = f"{root / 'in' / 'grey.png'},{root / 'in' / 'flat.png'}"
    flags.FLAGS(["nucjax", "--mode=predict", f"--workdir={root / 'workdir'}",
                 f"--input={inputs}", f"--output={tmp_path}"])  # fmt: skip
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main(["nucjax"])
    finally:
        flags.FLAGS.unparse_flags()
    assert exit_.value.code == predict.WRITE_FAILED_EXIT_CODE == 4
    printed = capsys.readouterr().out
    assert "1 images segmented, 0 skipped, 1 FAILED to write (checkpoint step 7)" in printed
    assert f"  FAILED  {root / 'in' / 'grey.png'}: outputs not written: " in printed
    assert not [n for n in os.listdir(tmp_path) if n.startswith("grey")]


def _failing(write, name: str):
    """`write`, except that writing a file called `name` fails as a full disk does."""

    def failing(path, *args):
        if os.path.basename(path) == name:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return write(path, *args)

    return failing


def test_broken_links_and_subfolders_are_reported(tmp_path, run, caplog):
    """What gather_inputs returns for them (tests/test_image_io.py) is what predict reports."""
    model, root, _, _ = run
    folder = tmp_path / "in"
    links_and_subfolders(folder, root / "in" / "grey.png")
    unusable = image_io.gather_inputs([str(folder)])[2]
    assert len(unusable) == 2
    with caplog.at_level("WARNING"):
        summary = predict.predict_folder(model, [str(folder)], str(tmp_path / "o"))
    assert summary["processed"] == 1 and summary["skipped_files"] == unusable
    assert sum("link.png" in r.getMessage() for r in caplog.records) == 1
    assert sum("more: a folder" in r.getMessage() for r in caplog.records) == 1


def test_predict_split_writes_a_submission(tmp_path, run):
    model, root, _, _ = run
    summary = predict.predict_split(model, "validation", str(tmp_path), image_outputs=False)
    config = model.config
    assert summary["processed"] == config.data.synthetic_num_images
    with open(summary["submission"]) as f:
        ids = {r["ImageId"] for r in csv.DictReader(f)}
    assert ids == {f"synthetic-{i:05d}" for i in range(config.data.synthetic_num_images)}
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tif")]


def test_command_line(tmp_path, run):
    _, root, _, _ = run
    cmd = [
        sys.executable, "-m", "nucjax.main", "--mode=predict",
        f"--workdir={root / 'workdir'}", f"--input={root / 'in' / 'grey.png'}",
        f"--output={tmp_path}", "--figure_image=grey.png",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checkpoint_manager" not in done.stderr  # quiet: no orbax INFO lines
    assert "1 images segmented, 0 skipped (checkpoint step 7)" in done.stdout
    assert os.path.exists(tmp_path / "grey_labels.tif")
    assert os.path.exists(tmp_path / "grey_figure.png")


def test_stacks_are_segmented_plane_by_plane(tmp_path, run):
    model, _, _, _ = run
    planes = np.stack([nuclei_image((40, 48), 10 + k)[..., 0] for k in range(3)])
    os.makedirs(tmp_path / "in")
    tifffile.imwrite(tmp_path / "in" / "pair.tif", planes[:2], photometric="minisblack")
    with tifffile.TiffWriter(tmp_path / "in" / "three.tif") as tif:  # pages, no shape metadata
        for plane in planes:
            tif.write(plane, metadata=None)
    assert image_io.read_planes(str(tmp_path / "in" / "three.tif")).axis == "I"  # never RGB
    out = tmp_path / "out"
    summary = predict.predict_folder(model, [str(tmp_path / "in")], str(out), rois=True)
    assert summary["processed"] == 2 and not summary["skipped_files"]
    with open(out / "submission.csv") as f:
        ids = [r["ImageId"] for r in csv.DictReader(f)]
    for stem, n in (("pair", 2), ("three", 3)):
        label = tifffile.imread(out / f"{stem}_labels.tif")
        assert label.shape == (n, 40, 48) and tifffile.imread(out / f"{stem}_prob.tif").shape == (
            n,
            40,
            48,
        )
        offset = 0
        for k in range(n):  # each plane on its own; ids run on across planes
            want = _segment(model, planes[k]).instances.label
            np.testing.assert_array_equal(label[k], np.where(want > 0, want + offset, 0))
            offset += int(want.max())
        assert offset > n  # it found nuclei
        with open(out / f"{stem}_nuclei.csv") as f:
            table = list(csv.DictReader(f))
        assert [int(r["id"]) for r in table] == list(range(1, offset + 1))
        assert all(
            np.count_nonzero(label[int(r["plane"])] == int(r["id"])) == int(r["area"])
            for r in table
        )
        assert tifffile.imread(out / f"{stem}_overlay.tif").shape == (n, 40, 48, 3)
        rois = roifile.roiread(out / f"{stem}_rois.zip")
        for k in range(n):
            on_k = [r for r in rois if r.position == k + 1]
            np.testing.assert_array_equal(_raster(on_k, (40, 48)), label[k])
        assert [i for i in dict.fromkeys(ids) if i.startswith(stem)] == [
            f"{stem}_{'q' if stem == 'pair' else 'i'}{k}" for k in range(n)
        ]


def test_channel_picks_the_nuclear_stain(tmp_path, run):
    model, _, _, _ = run
    nuclei = nuclei_image((40, 48), 20)[..., 0].astype(np.uint16) * 257
    noise = np.random.default_rng(0).integers(0, 65535, nuclei.shape, dtype=np.uint16)
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.stack([noise, nuclei]), imagej=True, metadata={"axes": "CYX"})
    skipped = predict.predict_folder(model, [str(path)], str(tmp_path / "a"))
    assert (
        "2 channels (axes CYX); choose the nuclear one with --channel=0..1"
        in (skipped["skipped_files"][0]["reason"])
    )
    predict.predict_folder(model, [str(path)], str(tmp_path / "b"), channel=1)
    label = tifffile.imread(tmp_path / "b" / "two_labels.tif")
    np.testing.assert_array_equal(label, _segment(model, nuclei).instances.label)
    assert label.max() > 1
