"""``edgetam track`` end to end: a TIFF stack on disk, a checkpoint folder, a label stack out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import edgetam_kit as ek
from edgetam_kit.cli import main
from video_runners import moving_disks


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("track")
    frames = moving_disks(6, 256)
    tifffile.imwrite(d / "stack.tif", frames, photometric="rgb")
    folder = ek.save_model(ek.build_random_model("tiny", seed=4), d / "ckpt")
    return d, frames, folder


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_track_writes_the_label_stack(setup, suffix: str, capsys) -> None:
    d, frames, folder = setup
    out = d / f"labels{suffix}"
    rc = main(["track", str(d / "stack.tif"), "--prompt", "1:1:86,103", "--box", "3:2:155,50,205,105",
               "--checkpoint", str(folder), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    if suffix == ".tif":
        got = tifffile.imread(out)
    else:
        import zarr

        got = np.asarray(zarr.open(str(out), mode="r"))
    expected = ek.segment_volume(frames, [
        {"frame": 1, "obj_id": 1, "points": [[86, 103]], "labels": [1]},
        {"frame": 3, "obj_id": 2, "box": [155, 50, 205, 105]},
    ], ek.load_model(folder))
    assert got.dtype == np.uint32 and got.shape == (6, 256, 256)
    np.testing.assert_array_equal(got, expected)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv,pattern", [
    (["--prompt", "0:1"], "--prompt expects FRAME:OBJ:X,Y"),
    (["--prompt", "0:0:5,5"], "object id >= 1"),
    (["--box", "0:1:5,5,9"], "--box expects X0,Y0,X1,Y1"),
    (["--negative", "0:1:5,5"], "only --negative clicks"),
    ([], "give at least one --prompt"),
    (["--prompt", "9:1:5,5"], "frame must be a frame index in \\[0, 5\\]"),
])
def test_track_bad_prompts(setup, argv, pattern, capsys) -> None:
    import re

    d, _frames, folder = setup
    rc = main(["track", str(d / "stack.tif"), *argv, "--checkpoint", str(folder), "-o", str(d / "x.tif")])
    assert rc == 2
    assert re.search(pattern, capsys.readouterr().err)


def test_track_refuses_unknown_output(setup, capsys) -> None:
    d, _frames, folder = setup
    assert main(["track", str(d / "stack.tif"), "--prompt", "0:1:5,5", "--checkpoint", str(folder),
                 "-o", str(d / "x.png")]) == 2
    assert "-o/--output must end with one of .tif, .tiff, .zarr" in capsys.readouterr().err
