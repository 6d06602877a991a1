"""Kill tests (issue 18, defects 2 and 3): a writer SIGKILLed at random points, repeated, never
damages the previous good output, and the next run leaves nothing behind. Bounded: a few kills
per writer, each subprocess waited for at most a minute."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import edgetam_kit as ek
from kill_helpers import hidden_names as _leftovers, kill as _kill, wait_line as _wait_line
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1",
               EDGETAM_KIT_DISABLE_PLUGINS="1", OMP_NUM_THREADS="1")
    return env


def _start(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# ----------------------------------------------------------------------------- OME-Zarr rewrite
ZARR_WRITER = """
    import sys
    import numpy as np
    import edgetam_kit.io.atomic as atomic
    from edgetam_kit.io.export import MaskSet, export_masks
    if sys.argv[2] == "rename":
        atomic._exchange = lambda a, b: False  # the fallback where renameat2 is missing
    hw = (768, 768)
    def item(n):
        anns = [np.zeros(hw, bool) for _ in range(n)]
        for i, a in enumerate(anns):
            a[i * 50:i * 50 + 40, :] = True
        return MaskSet("a.png", hw, anns, np.full((*hw, 3), n, np.uint8))
    print("ready", flush=True)
    k = 0
    while True:
        export_masks(item(1 + k % 3), sys.argv[1], format="zarr")
        k += 1
"""


def _zarr_ok(path: Path) -> int:
    """The number of masks of a complete export at ``path`` (every level readable, image agrees)."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    labels = [np.asarray(root[f"labels/masks/{i}"]) for i in range(len(root["labels/masks"].attrs["multiscales"][0]["datasets"]))]
    n = int(labels[0].max())
    assert n >= 1 and all(int(lv.max()) == n for lv in labels)
    assert int(np.asarray(root["0"]).max()) == n, "image and labels come from the same write"
    return n


@pytest.mark.parametrize("mode", ["exchange", "rename"])
def test_3_sigkill_during_zarr_rewrite_keeps_a_whole_export(tmp_path, mode) -> None:
    out = tmp_path / "out"
    rng = random.Random(18)
    seen = set()
    left_behind = 0
    for _ in range(5):
        proc = _start(ZARR_WRITER.replace("sys.argv[1]", repr(str(out))).replace("sys.argv[2]", repr(mode)))
        _wait_line(proc, "ready")
        time.sleep(rng.uniform(0.3, 2.0))
        _kill(proc)
        left_behind += bool(_leftovers(out)) if out.exists() else 0
        if mode == "rename":
            from edgetam_kit.io.atomic import clean_leftovers

            clean_leftovers(out)  # what the next writer does first
        if (out / "a.zarr").exists():
            seen.add(_zarr_ok(out / "a.zarr"))
        else:
            assert not seen, "a kill lost the previous export"
    assert seen, "no write completed before the kills"
    assert left_behind >= 1, "no kill landed during a write: the test checked nothing"
    from edgetam_kit.io.export import MaskSet, export_masks

    export_masks(MaskSet("a.png", (8, 8), [np.ones((8, 8), bool)]), out, format="zarr")
    assert sorted(p.name for p in out.iterdir()) == ["a.zarr"], "the next run must clean every leftover"


# ----------------------------------------------------------------------------- track -o
TRACK = """
    import sys
    from edgetam_kit.cli import main
    sys.exit(main(["track", {src!r}, "--prompt", {prompt!r}, "--checkpoint", {ckpt!r}, "-o", {out!r},
                   "--direction", "forward"]))
"""


def test_2_sigkill_during_track_keeps_the_previous_output(tmp_path) -> None:
    import tifffile

    from video_runners import moving_disks

    np.save(tmp_path / "frames.npy", moving_disks(12, 96))
    ckpt = ek.save_model(ek.build_random_model("tiny", seed=4), tmp_path / "ckpt")
    args = dict(src=str(tmp_path / "frames.npy"), prompt="0:1:30,38", ckpt=str(ckpt))
    ref_proc = _start(TRACK.format(out=str(tmp_path / "ref.tif"), **args))
    t0 = _wait_line(ref_proc, "object 1")
    assert ref_proc.wait(timeout=120) == 0, ref_proc.stderr.read()[-2000:]
    duration = time.monotonic() - t0
    ref_proc.stdout.close()
    ref_proc.stderr.close()
    ref = tifffile.imread(tmp_path / "ref.tif")

    out = tmp_path / "keep.tif"
    good = np.full((3, 5, 5), 7, np.uint32)
    tifffile.imwrite(out, good)
    rng = random.Random(2)
    mid_write = 0
    for k in range(3):  # stratified kill points over the tracking time
        proc = _start(TRACK.format(out=str(out), **args))
        _wait_line(proc, "object 1")
        time.sleep(duration * (0.05 + 0.8 * (k + rng.random()) / 3))
        _kill(proc)
        mid_write += any(n.startswith(".keep.tif.") for n in _leftovers(tmp_path))
        got = tifffile.imread(out)
        assert np.array_equal(got, good) or np.array_equal(got, ref), "keep.tif is neither the old nor a whole new stack"
    assert mid_write >= 1, "no kill landed while the stack was being written"
    proc = _start(TRACK.format(out=str(out), **args))
    assert proc.wait(timeout=120) == 0
    proc.stdout.close()
    proc.stderr.close()
    assert np.array_equal(tifffile.imread(out), ref)
    assert _leftovers(tmp_path) == [], "the next run must clean what the killed ones left"
