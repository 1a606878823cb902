"""Pack what a borrowed GPU host needs beyond the git tree, for experiments/gpu_run.sh.

  python experiments/gpu_pack.py [--out=gpu_pack] [--data_dir=D] [--source=S]

The host (Python 3.12, JAX with CUDA, flax, optax, orbax, scikit-image, tifffile, pillow,
absl-py, tensorboard; no TensorFlow, no package registry) gets one command and, besides the git
working tree, up to 64 MiB of ignored paths. This writes OUT (git-ignored) holding
  data/dsb2018_compact/val10_seed0/{train,validation,test}.npz   the compact DSB splits
      (nucjax.data.dsb2018_compact; built here from the BBBC038 files first when missing)
  wheels/*.whl   what nucjax imports at module level on the train / evaluate / predict path
      and the host lacks, each at the version this checkout runs (WHEELS): ml_collections
      (config flags), PyYAML (ml_collections imports it; the cp312 wheel's C part cannot load
      from a zip on PYTHONPATH, and PyYAML then runs its pure-Python code), tqdm (progress
      bars), roifile (nucjax.outputs). matplotlib (17 MB of wheels with its dependencies)
      does not fit: table1.py draws its plot with Pillow when matplotlib is missing, and only
      predict's optional --figure_image needs it.
  MANIFEST.json  each file's size and sha256
It prints OUT's size and that of the tree that travels with it (tracked files and untracked
ones git does not ignore), and exits 1 when the two together exceed --limit_mib (60: the
device tool carries 64 MiB in all). OUT is written beside itself and renamed, so an
interrupted pack leaves no half-written folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nucjax.data import dsb2018_compact  # noqa: E402

WHEELS = ("ml_collections", "PyYAML", "tqdm", "roifile")  # distribution names
HOST_PYTHON = "3.12"
HOST_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
MIB = 1 << 20


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "gpu_pack"))
    parser.add_argument("--data_dir", default="", help="config.data.data_dir ('' = TFDS's)")
    parser.add_argument("--source", default="", help="BBBC038 files (config.data.download_source)")
    parser.add_argument("--limit_mib", type=float, default=60.0)
    return parser.parse_args(argv)


def requirements() -> list[str]:
    """WHEELS pinned to the versions installed here ("name==version")."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]


def download_wheels(folder: str, specs: Sequence[str]) -> None:
    """pip download of `specs` as wheels for the host (cp312, manylinux x86_64), no
    dependencies (the host has numpy, the only one WHEELS need besides each other)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", "--implementation=cp", f"--python-version={HOST_PYTHON}"]
    command += [f"--platform={p}" for p in HOST_PLATFORMS]
    run = subprocess.run([*command, "--dest", folder, *specs], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"gpu_pack: pip download {' '.join(specs)} failed: {run.stderr[-2000:]}")


def copy_splits(out: str, data_dir: str, source: str) -> list[str]:
    """The compact train / validation / test files copied to OUT/data (same layout)."""
    folder = dsb2018_compact.prepare(data_dir=data_dir, source=source)
    target = os.path.join(out, "data", dsb2018_compact.FOLDER, folder.name)
    os.makedirs(target)
    copied = []
    for split in dsb2018_compact.SPLITS:
        copied.append(shutil.copy2(folder / f"{split}.npz", os.path.join(target, f"{split}.npz")))
    return copied


def files_under(folder: str) -> list[str]:
    """Every file under `folder`, sorted, as paths relative to it."""
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in names]
    return sorted(found)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def tree_bytes(repo: str = REPO) -> int:
    """Bytes of the files the device tool copies: tracked, and untracked but not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    paths = {os.path.join(repo, p) for p in listed.decode().split("\0") if p}
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))


def pack(out: str, data_dir: str = "", source: str = "") -> dict:
    """Writes OUT (replacing an old one) and returns its manifest {file: {bytes, sha256}}."""
    out = os.path.abspath(out)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".", dir=os.path.dirname(out))
    try:
        copy_splits(tmp, data_dir, source)
        download_wheels(os.path.join(tmp, "wheels"), requirements())
        manifest = {
            name: {"bytes": os.path.getsize(p), "sha256": sha256(p)}
            for name in files_under(tmp)
            for p in [os.path.join(tmp, name)]
        }
        with open(os.path.join(tmp, "MANIFEST.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    pack(args.out, args.data_dir, args.source)
    packed = sum(os.path.getsize(os.path.join(args.out, n)) for n in files_under(args.out))
    tree = tree_bytes()
    total = packed + tree
    print(f"gpu_pack: {args.out}: {packed / MIB:.1f} MiB")
    for name in files_under(args.out):
        print(f"  {name}: {os.path.getsize(os.path.join(args.out, name)) / MIB:.2f} MiB")
    print(f"git tree (tracked + untracked, not ignored): {tree / MIB:.1f} MiB")
    print(f"together: {total / MIB:.1f} MiB of at most {args.limit_mib:g} MiB")
    if total > args.limit_mib * MIB:
        print(
            f"gpu_pack: {total / MIB:.1f} MiB exceeds {args.limit_mib:g} MiB: the device tool "
            "would not carry it",
            file=sys.stderr,
        )
        return 1
    rel = os.path.relpath(os.path.abspath(args.out), REPO)
    print(f'on the GPU host: run(command="experiments/gpu_run.sh $OUT", carry=["{rel}"])')
    return 0


if __name__ == "__main__":
    sys.exit(main())
