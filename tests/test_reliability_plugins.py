"""Issue 18, defect 8 (the rest): plugins that fail at work, not at load. A broken exporter or a
catch-all frame opener whose frames cannot be read is reported against its plugin and the built-in
is used in ``auto`` / ``track`` (or, with nothing to fall back to, one error line naming the plugin);
``edgetam plugins`` lists a backend that fails. Each test failed on the code before the fix (a
traceback, or "errors: none")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgetam_kit as ek
import edgetam_kit.plugins.manager as plugins
from edgetam_kit.cli import main
from edgetam_kit.plugins import PluginManager
from edgetam_kit.plugins.hookspecs import Exporter, FrameSourceOpener


@pytest.fixture()
def pm(monkeypatch) -> PluginManager:
    manager = PluginManager.create(autoload=False)
    monkeypatch.setattr(plugins, "_manager", manager)
    return manager


@pytest.fixture()
def png(tmp_path) -> Path:
    import skimage.io

    img = (np.random.default_rng(8).random((40, 56, 3)) * 255).astype(np.uint8)
    skimage.io.imsave(tmp_path / "a.png", img, check_contrast=False)
    return tmp_path / "a.png"


def _boom(*args, **kwargs):
    raise RuntimeError("plugin bug")


AUTO = ["--checkpoint", "random:tiny", "--points-per-side", "4", "--pred-iou-thresh", "0",
        "--stability-score-thresh", "0", "--quiet"]


@pytest.mark.parametrize("fmt", ["tiff", "coco"])
def test_8_broken_exporter_falls_back_to_the_builtin(pm, png, tmp_path, capsys, fmt) -> None:
    class BrokenExporter:
        @ek.hookimpl
        def edgetam_kit_exporters(self):
            return [Exporter(fmt, _boom, combined=fmt == "coco")]

    pm.register(BrokenExporter(), name="broken-exporter")
    out = tmp_path / ("m.json" if fmt == "coco" else "out")
    with pytest.warns(UserWarning, match=rf"'broken-exporter' failed at exporter '{fmt}' write: RuntimeError: plugin bug"):
        rc = main(["auto", str(png), "--format", fmt, "-o", str(out), *AUTO])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    written = out if fmt == "coco" else out / "a.tif"
    assert written.is_file() and str(written) in cap.out
    assert [e.plugin for e in pm.errors] == ["broken-exporter"]


def test_8_broken_exporter_without_a_builtin_is_one_error_line(pm, png, tmp_path, capsys) -> None:
    class BrokenFormat:
        @ek.hookimpl
        def edgetam_kit_exporters(self):
            return [Exporter("npz", _boom, ".npz")]

    pm.register(BrokenFormat(), name="npz-plugin")
    with pytest.warns(UserWarning, match="'npz-plugin' failed"):
        rc = main(["auto", str(png), "--format", "npz", "-o", str(tmp_path / "out"), *AUTO])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "plugin 'npz-plugin' failed (RuntimeError: plugin bug)" in err and "no built-in 'npz'" in err
    with pytest.raises(ValueError, match="npz-plugin"):  # the same failure is warned about once
        ek.export_masks(ek.MaskSet("a.png", (4, 4), [np.ones((4, 4), bool)]), tmp_path / "x", format="npz")


class _PluginFrames:
    """A FrameSource whose frames from ``bad_from`` on raise."""

    def __init__(self, frames: np.ndarray, bad_from: int) -> None:
        self.frames, self.bad_from = frames, bad_from
        self.shape, self.dtype = frames.shape, frames.dtype

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> np.ndarray:
        if i >= self.bad_from:
            raise RuntimeError(f"cannot decode frame {i}")
        return self.frames[i]


def _catch_all(pm: PluginManager, bad_from: int) -> None:
    class CatchAll:
        @ek.hookimpl
        def edgetam_kit_frame_sources(self):
            return [FrameSourceOpener("everything", lambda s: True,
                                      lambda s, **o: _PluginFrames(np.load(s) if str(s).endswith(".npy") else
                                                                   np.asarray(s), bad_from))]

    pm.register(CatchAll(), name="catch-all")


@pytest.fixture()
def frames(tmp_path) -> Path:
    from video_runners import moving_disks

    np.save(tmp_path / "frames.npy", moving_disks(3, 48))
    return tmp_path / "frames.npy"


def _track(frames: Path, out: Path) -> list[str]:
    return ["track", str(frames), "--prompt", "0:1:16,20", "--checkpoint", "random:tiny?seed=2", "-o", str(out),
            "--direction", "forward"]


def test_8_catch_all_opener_whose_frames_fail_falls_back_in_track(pm, frames, tmp_path, capsys) -> None:
    import tifffile

    assert main(_track(frames, tmp_path / "ref.tif")) == 0  # the built-in array source
    _catch_all(pm, bad_from=0)
    with pytest.warns(UserWarning, match=r"'catch-all' failed at edgetam_kit_frame_sources \(opener 'everything'\): "
                                         r"RuntimeError: cannot decode frame 0"):
        rc = main(_track(frames, tmp_path / "out.tif"))
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), tifffile.imread(tmp_path / "ref.tif"))


def test_8_plugin_source_failing_midway_names_the_plugin(pm, frames, tmp_path, capsys) -> None:
    _catch_all(pm, bad_from=2)
    with pytest.warns(UserWarning, match="'catch-all' failed at frame source read"):
        rc = main(_track(frames, tmp_path / "out.tif"))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "frame 2 cannot be read by the frame source of plugin 'catch-all' (RuntimeError: cannot decode frame 2)" in err
    assert not (tmp_path / "out.tif").exists()


def test_8_plugins_command_lists_a_failing_backend(pm, capsys) -> None:
    from edgetam_kit.runtime import Backend

    class BrokenBackends:
        @ek.hookimpl
        def edgetam_kit_backends(self):
            return [Backend("eager", _boom, "a broken override"), Backend("fancy", _boom, "never works")]

    pm.register(BrokenBackends(), name="broken-backend")
    with pytest.warns(UserWarning, match="broken-backend"):
        assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "errors: none" not in out
    for name in ("eager", "fancy"):
        assert f"broken-backend (backend '{name}' prepare): RuntimeError: plugin bug" in out
