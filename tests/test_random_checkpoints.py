"""Issue 18: the CLI can be tried without weights (``--checkpoint random:edgetam`` / ``random:tiny``),
and everything made that way is labelled random: a stderr line on every command and the label in
each written format's metadata. Also: ``demo`` never swaps a bad --checkpoint for random weights, and
``info`` does not promise a download it cannot make (demo's refusal: tests/test_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import edgetam_kit as ek
from edgetam_kit.cli import main
from edgetam_kit.io.checkpoint import random_weights_of

LINE = "weights: RANDOM weights (random:tiny): outputs are not meaningful"
NOTE = "RANDOM weights (random:tiny): outputs are not meaningful"


def _params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_load_model_random_names_and_seeds() -> None:
    tiny = ek.load_model("random:tiny")
    assert tiny.config.name == "tiny" and tiny.has_video and random_weights_of(tiny) == "random:tiny"
    again = ek.load_model("random:tiny?seed=0")
    other = ek.load_model("random:tiny?seed=1")
    assert torch.equal(_params(tiny), _params(again)) and not torch.equal(_params(tiny), _params(other))
    assert random_weights_of(other) == "random:tiny?seed=1"
    real_shape = ek.load_model("random:edgetam")
    assert real_shape.config.name == "edgetam" and random_weights_of(real_shape) == "random:edgetam"
    for bad in ("random:tiny?seed=x", "random:tiny?size=2", "random:tiny?seed=-1"):
        with pytest.raises(ValueError, match=r"\?seed=N"):
            ek.load_model(bad)
    with pytest.raises(ValueError, match="config"):
        ek.load_model("random:tiny", config="edgetam")


def test_saved_random_model_stays_labelled(tmp_path) -> None:
    folder = ek.save_model(ek.load_model("random:tiny"), tmp_path / "m")
    assert random_weights_of(ek.load_model(folder)) == "random:tiny"
    assert random_weights_of(ek.load_model(ek.save_model(ek.build_random_model("tiny"), tmp_path / "r"))) is None


@pytest.fixture()
def png(tmp_path) -> Path:
    import skimage.io

    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    skimage.io.imsave(tmp_path / "cells.png", img, check_contrast=False)
    return tmp_path / "cells.png"


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_segment_with_random_tiny_is_labelled(png, tmp_path, capsys, suffix) -> None:
    import tifffile
    from PIL import Image

    out = tmp_path / f"mask{suffix}"
    rc = main(["segment", str(png), "--point", "20,20", "--checkpoint", "random:tiny", "-o", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert LINE in cap.err and NOTE in cap.out
    if suffix == ".png":
        assert Image.open(out).text["edgetam_weights"] == NOTE
    else:
        with tifffile.TiffFile(out) as tif:
            assert tif.shaped_metadata[0]["edgetam_weights"] == NOTE


def test_auto_outputs_carry_the_label_in_every_format(png, tmp_path, capsys) -> None:
    import tifffile
    import zarr

    common = ["--checkpoint", "random:tiny", "--points-per-side", "4", "--pred-iou-thresh", "0",
              "--stability-score-thresh", "0", "--quiet"]
    for fmt, out in (("coco", tmp_path / "m.json"), ("tiff", tmp_path / "t"), ("zarr", tmp_path / "z")):
        assert main(["auto", str(png), "--format", fmt, "-o", str(out), *common]) == 0
        cap = capsys.readouterr()
        assert LINE in cap.err and NOTE in cap.out, fmt
    info = json.loads((tmp_path / "m.json").read_text())["info"]
    assert NOTE in info["description"] and info["edgetam_weights"] == NOTE
    with tifffile.TiffFile(tmp_path / "t" / "cells.tif") as tif:
        assert tif.shaped_metadata[0]["edgetam_weights"] == NOTE
    assert zarr.open_group(str(tmp_path / "z" / "cells.zarr"), mode="r").attrs["edgetam_weights"] == NOTE


def test_real_weights_are_not_labelled(png, tmp_path, capsys) -> None:
    out = tmp_path / "m.json"
    ckpt = ek.save_model(ek.build_random_model("tiny", video=False), tmp_path / "ckpt")  # read from files: not "random"
    assert main(["auto", str(png), "-o", str(out), "--checkpoint", str(ckpt),
                 "--points-per-side", "2", "--quiet"]) == 0
    assert "RANDOM" not in capsys.readouterr().err
    info = json.loads(out.read_text())["info"]
    assert info == {"description": "EdgeTAM masks", "version": "1.0"}


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_track_with_random_tiny_is_labelled(tmp_path, capsys, suffix) -> None:
    import tifffile
    import zarr

    from video_runners import moving_disks

    np.save(tmp_path / "frames.npy", moving_disks(3, 48))
    out = tmp_path / f"labels{suffix}"
    rc = main(["track", str(tmp_path / "frames.npy"), "--prompt", "0:1:16,20", "--checkpoint", "random:tiny",
               "-o", str(out), "--direction", "forward"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert LINE in cap.err and NOTE in cap.out
    if suffix == ".tif":
        with tifffile.TiffFile(out) as tif:
            assert tif.shaped_metadata[0]["edgetam_weights"] == NOTE
            assert tif.asarray().shape == (3, 48, 48)
    else:
        assert zarr.open_array(str(out), mode="r").attrs["edgetam_weights"] == NOTE


def test_embed_with_random_tiny_is_labelled(tmp_path, capsys) -> None:
    import tifffile

    from video_runners import moving_disks

    tifffile.imwrite(tmp_path / "stack.tif", np.asarray(moving_disks(2, 48)))
    cache = tmp_path / "cache"
    assert main(["embed", str(tmp_path / "stack.tif"), "--checkpoint", "random:tiny", "-o", str(cache),
                 "--quiet"]) == 0
    cap = capsys.readouterr()
    assert LINE in cap.err and NOTE in cap.out
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 2
    for entry in entries:
        attrs = json.loads((entry / ".zattrs").read_text()) if (entry / ".zattrs").exists() else \
            json.loads((entry / "zarr.json").read_text())["attributes"]
        assert attrs["signature"]["model"]["random_weights"] == "random:tiny"


def test_info_does_not_promise_an_offline_download(monkeypatch, capsys) -> None:
    """`edgetam info --checkpoint owner/name` said "would be downloaded" with HF_HUB_OFFLINE set."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["info", "--checkpoint", "nobody-here/no-such-model"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert "would be downloaded" not in line and "NOT available" in line and "HF_HUB_OFFLINE" in line
    assert main(["info", "--checkpoint", "random:tiny"]) == 0
    out = capsys.readouterr().out
    assert "random:tiny" in out and "RANDOM weights, tiny preset" in out.splitlines()[-1]


def test_export_onnx_of_random_tiny_is_labelled(tmp_path, capsys) -> None:
    rc = main(["export", "--checkpoint", "random:tiny", "--format", "onnx", "--image-only", "--exporter",
               "torchscript", "-o", str(tmp_path / "onnx")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert LINE in cap.err
    assert json.loads((tmp_path / "onnx" / "manifest.json").read_text())["random_weights"] == NOTE
