"""Output writers: atomic writes leave the old file or the complete new one, never half."""

import os

import pytest

from nucjax import outputs


def test_write_atomically_leaves_nothing_on_failure(tmp_path):
    path = str(tmp_path / "out.txt")
    outputs.write_text(path, "old")

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        outputs.write_atomically(path, crash)
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["out.txt"]
