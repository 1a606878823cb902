"""A trained model in one file, to hand to a colleague: a model bundle.

  nucjax export --workdir=runs/unet --output=unet.nucjax
  nucjax predict --workdir=unet.nucjax --input=images/      # wherever a workdir is accepted
  model = nucjax.load("unet.nucjax")

A bundle is a zip archive (stdlib zipfile, deflated) holding
  manifest.json   format and its version, the nucjax version, model name, checkpoint step, and
                  the sha256 of every other member
  config.json     the resolved config of the run (as WORKDIR/config.json)
  meta.json       the checkpoint's description: model name, every parameter's shape
  summary.json    the training summary (WORKDIR/summary.json; null when the run wrote none)
  variables/params/<module path>.npy, variables/batch_stats/<module path>.npy
                  one array per file in numpy's .npy format (never pickled)
No optimizer state, and no orbax or TensorFlow needed to read it. It is written atomically
(nucjax.outputs.write_atomically) and every member's checksum is verified on reading: a
damaged or foreign file is a BundleError of one line naming the file and what is wrong.
The writer and reader are here; nucjax.workdir.export and nucjax.workdir.load use them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from typing import Any, NamedTuple

import numpy as np
from flax import traverse_util

import nucjax
from nucjax import outputs

FORMAT = "nucjax-model"
FORMAT_VERSION = 1
SUFFIX = ".nucjax"
_VARIABLES = "variables/"
_COLLECTIONS = ("params", "batch_stats")


class BundleError(ValueError):
    """A file given as a model bundle that is not one, or is damaged."""


class Bundle(NamedTuple):
    """config: the saved config (a dict, as JSON); variables: {"params", "batch_stats"} of
    numpy arrays; meta: checkpoint.describe of the params; step: the checkpoint step;
    summary: the training summary or None; manifest: manifest.json."""

    config: dict
    variables: dict
    meta: dict
    step: int
    summary: dict | None
    manifest: dict


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def _npy_bytes(array, name: str) -> bytes:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: arrays of dtype {array.dtype} cannot be bundled")
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _members(config: dict, variables: dict, meta: dict, summary) -> dict[str, bytes]:
    members = {
        "config.json": _json_bytes(config),
        "meta.json": _json_bytes(meta),
        "summary.json": _json_bytes(summary),
    }
    for collection in _COLLECTIONS:
        flat = traverse_util.flatten_dict(dict(variables.get(collection, {})), sep="/")
        for key, array in flat.items():
            name = f"{_VARIABLES}{collection}/{key}.npy"
            members[name] = _npy_bytes(array, name)
    return members


def write(path: str, *, config: dict, variables: dict, meta: dict, step: int, summary=None):
    """Write a bundle to `path` atomically. Returns its manifest.

    config: the resolved config as a JSON-able dict; variables: {"params", "batch_stats"}
    pytrees of arrays (nested dicts); meta: checkpoint.describe(model name, params).
    """
    members = _members(config, variables, meta, summary)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nucjax_version": nucjax.__version__,
        "model": meta.get("model"),
        "step": int(step),
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }

    def write_zip(tmp):
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("manifest.json", _json_bytes(manifest))
            for name, data in members.items():
                zf.writestr(name, data)

    outputs.write_atomically(path, write_zip)
    return manifest


def _check_manifest(manifest: dict) -> None:
    if manifest.get("format") != FORMAT:
        raise ValueError(f"manifest.json names format {manifest.get('format')!r}, not {FORMAT!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"format version {manifest['format_version']} was written by a newer nucjax "
            f"({manifest.get('nucjax_version')}); this one reads version {FORMAT_VERSION}"
        )


def _read_checked(zf: zipfile.ZipFile, manifest: dict, name: str) -> bytes:
    data = zf.read(name)  # zipfile checks each member's CRC-32 too
    if hashlib.sha256(data).hexdigest() != manifest["sha256"].get(name):
        raise ValueError(f"{name} does not match its checksum")
    return data


def _read(path: str, arrays: bool) -> Bundle:
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        _check_manifest(manifest)
        names = set(zf.namelist()) - {"manifest.json"}
        if names != set(manifest["sha256"]):
            missing = sorted(set(manifest["sha256"]) ^ names)
            raise ValueError(f"members missing or not in the manifest: {', '.join(missing[:3])}")
        config, meta, summary = (
            json.loads(_read_checked(zf, manifest, f"{n}.json"))
            for n in ("config", "meta", "summary")
        )
        variables: dict[str, Any] = {c: {} for c in _COLLECTIONS}
        for name in sorted(names) if arrays else ():
            if name.startswith(_VARIABLES):
                collection, key = name[len(_VARIABLES) : -len(".npy")].split("/", 1)
                data = io.BytesIO(_read_checked(zf, manifest, name))
                variables[collection][key] = np.lib.format.read_array(data, allow_pickle=False)
    variables = {c: traverse_util.unflatten_dict(v, sep="/") for c, v in variables.items()}
    return Bundle(config, variables, meta, int(manifest["step"]), summary, manifest)


def read(path: str, *, arrays: bool = True) -> Bundle:
    """The bundle at `path`, every member checked against its sha256 (arrays=False: all but
    the arrays, which stay unread: Bundle.variables is then {"params": {}, ...}).

    Raises BundleError (one line: the file and what is wrong) for anything that is not an
    intact bundle this nucjax can read.
    """
    try:
        return _read(path, arrays)
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, TypeError) as e:
        reason = f"{type(e).__name__}: {e}" if isinstance(e, KeyError) else str(e)
        raise BundleError(f"{path}: not an intact nucjax model bundle ({reason})") from None


def is_bundle_path(path: str) -> bool:
    """Whether `path` names a bundle rather than a workdir: any existing file does
    (a workdir is a folder)."""
    return os.path.isfile(path)


__all__ = ["SUFFIX", "Bundle", "BundleError", "is_bundle_path", "read", "write"]
