"""The ``edgetam`` command line, run in-process through ``edgetam_kit.cli.main``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.io
import tifffile

import edgetam_kit as ek
from edgetam_kit.cli import main

H, W = 96, 128


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight model saved as an HF folder."""
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-hf"
    ek.save_model(ek.build_random_model("tiny", seed=3), folder)
    return folder


@pytest.fixture(scope="module")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small RGB test image: a bright disc on a textured background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    img = rng.integers(0, 60, (H, W, 3)).astype(np.uint8)
    img[(yy - 48) ** 2 + (xx - 60) ** 2 < 20**2] = (230, 200, 90)
    path = tmp_path_factory.mktemp("img") / "disc.png"
    skimage.io.imsave(path, img, check_contrast=False)
    return path


def expected_mask(checkpoint: Path, image_path: Path, multimask: bool, **prompt) -> np.ndarray:
    """The best mask the Python API gives for the same prompt."""
    pred = ek.ImagePredictor(ek.load_model(checkpoint))
    pred.set_image(skimage.io.imread(image_path))
    r = pred.predict(multimask=multimask, **prompt)
    return r.masks[r.best]


@pytest.mark.parametrize("multimask", [False, True])
def test_segment_png_matches_api(checkpoint, image_path, tmp_path, capsys, multimask):
    out = tmp_path / "mask.png"
    argv = ["segment", str(image_path), "--point", "60,48", "--negative", "10,10", "--box", "35,25,85,70",
            "--checkpoint", str(checkpoint), "-o", str(out)] + (["--multimask"] if multimask else [])
    assert main(argv) == 0
    written = skimage.io.imread(out)
    assert written.shape == (H, W) and written.dtype == np.uint8
    assert set(np.unique(written)) <= {0, 255}
    want = expected_mask(checkpoint, image_path, multimask, points=[[60, 48], [10, 10]], labels=[1, 0],
                         box=[35, 25, 85, 70])
    np.testing.assert_array_equal(written == 255, want)
    stdout = capsys.readouterr().out
    assert "scores:" in stdout and "object score:" in stdout


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_segment_tif_and_npy(checkpoint, image_path, tmp_path, suffix):
    out = tmp_path / f"sub/mask{suffix}"
    assert main(["segment", str(image_path), "--point", "60,48", "--checkpoint", str(checkpoint), "-o", str(out)]) == 0
    want = expected_mask(checkpoint, image_path, False, points=[[60, 48]])
    if suffix == ".npy":
        got = np.load(out)
        assert got.dtype == bool
        np.testing.assert_array_equal(got, want)
    else:
        got = tifffile.imread(out)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want.astype(np.uint8))


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--point", "60;48"], "--point expects X,Y in pixels, got '60;48'"),
        (["--point", "60"], "--point expects X,Y"),
        (["--point", "60,48,3"], "--point expects X,Y"),
        (["--point", "60,nan"], "--point expects X,Y"),
        (["--point", "60,48", "--negative", "a,b"], "--negative expects X,Y"),
        (["--box", "1,2,3"], "--box expects X0,Y0,X1,Y1"),
        ([], "give a prompt"),
    ],
)
def test_segment_bad_prompt(checkpoint, image_path, tmp_path, capsys, flags, needle):
    argv = ["segment", str(image_path), *flags, "--checkpoint", str(checkpoint), "-o", str(tmp_path / "m.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgetam: error: ") and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.png").exists()


def test_segment_missing_checkpoint(image_path, tmp_path, capsys):
    missing = tmp_path / "no-such-checkpoint"
    argv = ["segment", str(image_path), "--point", "60,48", "--checkpoint", str(missing), "-o", str(tmp_path / "m.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgetam: error: --checkpoint:") and str(missing) in err and "not an existing path" in err
    assert len(err.strip().splitlines()) == 1


def test_segment_corrupt_checkpoint(checkpoint, image_path, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((checkpoint / "config.json").read_text())
    (broken / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:1000])
    argv = ["segment", str(image_path), "--point", "60,48", "--checkpoint", str(broken), "-o", str(tmp_path / "m.png")]
    assert main(argv) == 2
    assert "edgetam: error: --checkpoint: cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("image", "out", "needle"),
    [
        ("missing.png", "m.png", "IMAGE: "),
        (None, "m.jpg", "-o/--output must end with one of"),
        (None, "m.png", "outside the 128x96 image"),
    ],
)
def test_segment_bad_files(checkpoint, image_path, tmp_path, capsys, image, out, needle):
    src = str(tmp_path / image) if image else str(image_path)
    point = "500,48" if needle.startswith("outside") else "60,48"
    argv = ["segment", src, "--point", point, "--checkpoint", str(checkpoint), "-o", str(tmp_path / out)]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_info_lists_builtin_checkpoints(checkpoint, capsys):
    assert main(["info", "--checkpoint", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    for needle in ("edgetam-kit", "torch", "timm", "cuda", "edgetam-original", "yonigozlan/EdgeTAM-hf", "builtin"):
        assert needle in out
    assert any(line.split()[:1] == ["edgetam"] for line in out.splitlines())
    assert f"local folder (HF layout: config.json + model.safetensors): {checkpoint.resolve()}" in out


def test_info_named_checkpoint_does_not_download(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["info", "--checkpoint", "edgetam-original"]) == 0
    out = capsys.readouterr().out
    assert "registered name -> hub facebook/EdgeTAM (file edgetam.pt)" in out


def test_info_unknown_checkpoint(tmp_path, capsys):
    assert main(["info", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "edgetam: error: --checkpoint:" in capsys.readouterr().err


def test_plugins_lists_builtin(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "builtin" in out and "checkpoints: edgetam, edgetam-original" in out and "errors" in out


def test_demo_random_weights(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--config", "tiny", "-o", str(out_dir)]) == 0
    stdout = capsys.readouterr().out
    notices = [line for line in stdout.splitlines() if "RANDOM weights" in line]
    assert len(notices) == 1 and "no real edgetam weights" in notices[0].lower() and "meaningless" in notices[0]
    files = sorted(p.name for p in out_dir.iterdir())
    assert files and all("RANDOM_WEIGHTS" in name for name in files)
    overlay = skimage.io.imread(out_dir / "overlay_RANDOM_WEIGHTS.png")
    assert overlay.shape[:2] == (303, 384) and overlay.shape[2] in (3, 4)
    assert str(out_dir / "overlay_RANDOM_WEIGHTS.png") in stdout
    assert "encode:" in stdout and "median" in stdout


def test_demo_missing_checkpoint_is_an_error(tmp_path, capsys):
    """Issue 18: `edgetam demo --checkpoint /typo.pt` fell back to random weights with exit 0."""
    out_dir = tmp_path / "demo"
    assert main(["demo", "--checkpoint", str(tmp_path / "absent.pt"), "--config", "tiny", "-o", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "absent.pt" in err and "Traceback" not in err
    assert not out_dir.exists()


def test_demo_with_checkpoint(checkpoint, tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--checkpoint", str(checkpoint), "-o", str(out_dir)]) == 0
    stdout = capsys.readouterr().out
    assert "RANDOM" not in stdout
    assert (out_dir / "overlay.png").is_file() and not any("RANDOM" in p.name for p in out_dir.iterdir())


@pytest.mark.parametrize("command", [[], ["info"], ["segment"], ["demo"], ["plugins"]])
def test_help_shows_an_example(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "example" in capsys.readouterr().out


def test_no_command_prints_usage(capsys):
    assert main([]) == 2
    assert "usage: edgetam" in capsys.readouterr().err


def test_usage_error_exits_2(capsys):
    assert main(["segment", "img.png", "--point", "1,2"]) == 2  # --checkpoint and -o missing
    assert "required" in capsys.readouterr().err
