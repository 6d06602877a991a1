"""Frame sources: every built-in opened through open_source gives back the frames written to
disk (arrays, dask, zarr, PNG folders in natural order, TIFF stacks, videos), reads lazily,
refuses frames whose shape changes, reports corrupt videos, and lets a plugin opener win."""

from __future__ import annotations

import gc
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import edgetam_kit as ek
from edgetam_kit.plugins.hookspecs import FrameSourceOpener
from edgetam_kit.plugins import PluginManager
from edgetam_kit.io.sources import (
    ArraySource,
    FrameSource,
    ImageFolderSource,
    TiffStackSource,
    open_source,
)
from edgetam_kit.io.video_source import VideoSource
from edgetam_kit.testing.synthetic import SyntheticSource

T, H, W = 12, 48, 64


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """(12, 48, 64, 3) uint8: a moving disk on a texture, smooth enough for lossy codecs."""
    src = SyntheticSource(T, H, W, channels=3, noise=0.0, seed=3, period=12)
    return np.stack(list(src))


@pytest.fixture
def pm() -> PluginManager:
    return PluginManager.create(autoload=False)


def frames_of(src: FrameSource) -> np.ndarray:
    return np.stack([src.frame(i) for i in range(len(src))])


def write_video(path: Path, frames: np.ndarray, codec: str = "mpeg4", gop: int = 4) -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.bit_rate = 8_000_000
        stream.codec_context.gop_size = gop  # several keyframes: seeks land mid-video
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(stream.encode())
    return path


def decode_all(path: Path) -> np.ndarray:
    """An independent sequential decode of the whole file (the oracle for VideoSource)."""
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# --- arrays -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dtype", [((T, H, W, 3), np.uint8), ((T, H, W), np.uint16), ((5, 7, 9, 2), np.float32)])
def test_numpy(pm, shape, dtype) -> None:
    arr = (np.random.default_rng(0).random(shape) * 1000).astype(dtype)
    src = open_source(arr, plugin_manager=pm)
    assert isinstance(src, ArraySource) and isinstance(src, FrameSource)
    assert src.shape == shape and src.dtype == dtype and len(src) == shape[0]
    np.testing.assert_array_equal(frames_of(src), arr)
    np.testing.assert_array_equal(src.frame(-1), arr[-1])


def test_dask(pm, rgb) -> None:
    da = pytest.importorskip("dask.array")
    src = open_source(da.from_array(rgb, chunks=(1, H, W, 3)), plugin_manager=pm)
    assert src.shape == rgb.shape and src.dtype == np.uint8
    np.testing.assert_array_equal(frames_of(src), rgb)
    assert type(src.frame(3)) is np.ndarray


def test_zarr(pm, rgb, tmp_path) -> None:
    zarr = pytest.importorskip("zarr")
    z = zarr.open_array(str(tmp_path / "f.zarr"), mode="w", shape=rgb.shape, chunks=(1, H, W, 3), dtype=rgb.dtype)
    z[:] = rgb
    src = open_source(zarr.open_array(str(tmp_path / "f.zarr"), mode="r"), plugin_manager=pm)
    assert src.shape == rgb.shape
    np.testing.assert_array_equal(frames_of(src), rgb)


class CountingArray:
    """A duck array that records which frames were read."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr, self.shape, self.dtype, self.reads = arr, arr.shape, arr.dtype, []

    def __getitem__(self, i):
        self.reads.append(i)
        return self.arr[i]


def test_array_reads_one_frame_at_a_time(pm, rgb) -> None:
    arr = CountingArray(rgb)
    src = open_source(arr, plugin_manager=pm)
    assert arr.reads == []  # opening reads nothing
    np.testing.assert_array_equal(src.frame(5), rgb[5])
    assert arr.reads == [5]


# --- files --------------------------------------------------------------------------------

def test_png_folder_natural_sort(pm, rgb, tmp_path) -> None:
    import skimage.io

    for i in range(T):  # frame1 .. frame12: lexical order would put frame10 before frame2
        skimage.io.imsave(tmp_path / f"frame{i + 1}.png", rgb[i], check_contrast=False)
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(tmp_path, plugin_manager=pm)
    assert isinstance(src, ImageFolderSource)
    assert [p.name for p in src.files][:3] == ["frame1.png", "frame2.png", "frame3.png"]
    assert src.files[-1].name == "frame12.png"
    assert src.shape == rgb.shape and src.dtype == np.uint8
    np.testing.assert_array_equal(frames_of(src), rgb)
    assert isinstance(open_source(str(tmp_path), plugin_manager=pm), ImageFolderSource)  # str paths too


@pytest.mark.parametrize("kind", ["contiguous", "compressed", "appended", "rgb"])
def test_tiff_stack(pm, rgb, tmp_path, kind) -> None:
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "stack.tif"
    data = rgb if kind == "rgb" else (rgb[..., 0].astype(np.uint16) * 200)
    if kind == "appended":  # one page at a time: tifffile sees one series per page
        for f in data:
            tifffile.imwrite(path, f, append=True)
    else:
        tifffile.imwrite(path, data, compression="zlib" if kind == "compressed" else None,
                         photometric="rgb" if kind == "rgb" else None)
    src = open_source(path, plugin_manager=pm)
    assert isinstance(src, TiffStackSource)
    assert (src._mm is not None) == (kind in ("contiguous", "rgb"))  # memory-mapped where possible
    assert src.shape == data.shape and src.dtype == data.dtype
    np.testing.assert_array_equal(frames_of(src), data)
    src.close()
    np.testing.assert_array_equal(src.frame(3), data[3])  # reopens after close


@pytest.mark.parametrize("container,codec", [("mp4", "mpeg4"), ("mkv", "libx264"), ("avi", "mpeg4")])
def test_video(pm, rgb, tmp_path, container, codec) -> None:
    av = pytest.importorskip("av")
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} encoder not in this PyAV build")
    path = write_video(tmp_path / f"clip.{container}", rgb, codec=codec)
    src = open_source(path, plugin_manager=pm)
    assert isinstance(src, VideoSource)
    assert src.shape == rgb.shape and src.dtype == np.uint8
    forward = frames_of(src)
    np.testing.assert_array_equal(forward, decode_all(path))  # bit-exact vs an independent pass
    assert np.abs(forward.astype(int) - rgb).mean() < 4  # and close to what was written (lossy)
    for i in reversed(range(T)):  # backwards: every step re-seeks
        np.testing.assert_array_equal(src.frame(i), forward[i])
    order = list(range(T)) * 2
    random.Random(0).shuffle(order)
    for i in order:
        np.testing.assert_array_equal(src.frame(i), forward[i])
    assert len(src._key_index) >= 3  # gop 4: the keyframe index let seeks land mid-video


def test_video_count_pass_matches_metadata(pm, rgb, tmp_path) -> None:
    path = write_video(tmp_path / "clip.mp4", rgb)
    counted = VideoSource(path, count_frames=True)
    assert len(counted) == len(open_source(path, plugin_manager=pm)) == T
    np.testing.assert_array_equal(counted.frame(T - 1), decode_all(path)[-1])


# --- errors -------------------------------------------------------------------------------

def test_shape_change_in_image_folder(pm, rgb, tmp_path) -> None:
    import skimage.io

    for i in range(4):
        img = rgb[i] if i != 2 else rgb[i, :40]  # frame 2 is shorter
        skimage.io.imsave(tmp_path / f"f{i}.png", img, check_contrast=False)
    with pytest.raises(ValueError, match=r"frame 2 \(f2.png\).*\(40, 64\).*\(48, 64\)"):
        open_source(tmp_path, plugin_manager=pm)
    src = open_source(tmp_path, plugin_manager=pm, check_sizes=False)  # skip the header check: caught on read
    src.frame(1)
    with pytest.raises(ValueError, match=r"frame 2 .*shape \(40, 64, 3\)"):
        src.frame(2)


def test_channel_change_caught_on_read(pm, rgb, tmp_path) -> None:
    import skimage.io

    skimage.io.imsave(tmp_path / "a1.png", rgb[0], check_contrast=False)
    skimage.io.imsave(tmp_path / "a2.png", rgb[1, ..., 0], check_contrast=False)  # same size, grey
    src = open_source(tmp_path, plugin_manager=pm)
    with pytest.raises(ValueError, match=r"frame 1 .*\(48, 64\).*\(48, 64, 3\)"):
        src.frame(1)


def test_shape_change_in_tiff_and_array(pm, rgb, tmp_path) -> None:
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "odd.tif"
    for i in range(4):
        tifffile.imwrite(path, rgb[i, ..., 0] if i != 3 else rgb[i, :10, :, 0], append=True)
    with pytest.raises(ValueError, match=r"frame 3 .*\(10, 64\)"):
        open_source(path, plugin_manager=pm)

    class Ragged(CountingArray):
        def __getitem__(self, i):
            return self.arr[i] if i != 1 else self.arr[i, :-1]

    src = open_source(Ragged(rgb), plugin_manager=pm)
    with pytest.raises(ValueError, match=r"frame 1 has shape \(47, 64, 3\) but frame 0 has shape \(48, 64, 3\)"):
        src.frame(1)


def test_corrupt_videos(pm, rgb, tmp_path) -> None:
    pytest.importorskip("av")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ValueError, match=r"cannot read video .*garbage\.mp4: \S"):
        open_source(garbage, plugin_manager=pm)
    data = write_video(tmp_path / "full.mp4", rgb).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # the index (moov) is written last: gone
    with pytest.raises(ValueError, match=r"cannot read video .*truncated\.mp4: \S"):
        open_source(truncated, plugin_manager=pm)
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.webm"):
        open_source(empty, plugin_manager=pm)


def test_video_truncated_after_its_index(rgb, tmp_path) -> None:
    """Index first (faststart), data cut: opens with the metadata's 12 frames, and the first
    frame past the cut is a clear error naming the file and the frame."""
    av = pytest.importorskip("av")

    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for f in rgb:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    src = VideoSource(cut)
    assert len(src) == T
    with pytest.raises(ValueError, match=r"cut\.mp4: the video ended after \d+ frames \(its metadata says 12\)"):
        for i in range(T):
            src.frame(i)


@pytest.mark.parametrize("kind", ["video", "compressed-tiff"])
def test_reads_from_threads(pm, rgb, tmp_path, kind) -> None:
    """One cursor / file position per source: concurrent reads take turns and stay correct."""
    from concurrent.futures import ThreadPoolExecutor

    if kind == "video":
        path = write_video(tmp_path / "clip.mp4", rgb)
        forward = decode_all(path)
    else:
        tifffile = pytest.importorskip("tifffile")
        path, forward = tmp_path / "s.tif", rgb
        tifffile.imwrite(path, rgb, photometric="rgb", compression="zlib")
    with open_source(path, plugin_manager=pm) as src:
        order = [random.Random(k).randrange(T) for k in range(48)]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(src.frame, order))
    for i, f in zip(order, got):
        np.testing.assert_array_equal(f, forward[i])


def test_video_without_pyav_says_how_to_install(pm, rgb, tmp_path, monkeypatch) -> None:
    path = write_video(tmp_path / "clip.mp4", rgb)
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(ImportError, match="needs PyAV: pip install av"):
        open_source(path, plugin_manager=pm)


def test_bad_input(pm, tmp_path) -> None:
    with pytest.raises(TypeError, match=r"source: cannot open int; expected a FrameSource, a numpy"):
        open_source(42, plugin_manager=pm)
    with pytest.raises(FileNotFoundError, match=r"source: .*nope\.mp4 does not exist"):
        open_source(tmp_path / "nope.mp4", plugin_manager=pm)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"source: cannot open path .*notes\.txt; expected"):
        open_source(tmp_path / "notes.txt", plugin_manager=pm)
    with pytest.raises(ValueError, match=r"source must have shape \(T, H, W\) or \(T, H, W, C\)"):
        open_source(np.zeros((4, 5)), plugin_manager=pm)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no images"):
        open_source(tmp_path / "empty", plugin_manager=pm)
    src = open_source(np.zeros((3, 4, 5)), plugin_manager=pm)
    with pytest.raises(IndexError, match=r"frame index 3 is out of range .* 3 frames"):
        src.frame(3)
    with pytest.raises(TypeError, match=r"frame index must be an integer"):
        src.frame(1.5)


# --- plugins ------------------------------------------------------------------------------

class MarkerSource(SyntheticSource):
    pass


def test_builtins_registered_through_the_hook(pm) -> None:
    names = [o.name for o in pm.frame_source_openers()]
    assert names == ["array", "image-folder", "tiff-stack", "video"]


def test_plugin_opener_wins_over_builtins(pm, rgb) -> None:
    class NumpyPlugin:
        @ek.hookimpl
        def edgetam_kit_frame_sources(self):
            is_numpy = lambda s: isinstance(s, np.ndarray)  # noqa: E731
            return [FrameSourceOpener("marker", is_numpy, lambda s: MarkerSource(len(s), 8, 8))]

    pm.register(NumpyPlugin(), name="numpy-plugin")
    assert pm.frame_source_openers()[0].name == "marker"
    src = open_source(rgb, plugin_manager=pm)
    assert isinstance(src, MarkerSource) and len(src) == T
    assert src is open_source(src, plugin_manager=pm)  # a FrameSource comes back as is


def test_broken_plugin_openers_are_reported_and_skipped(pm, rgb) -> None:
    def boom(_):
        raise RuntimeError("opener exploded")

    class Broken:
        @ek.hookimpl
        def edgetam_kit_frame_sources(self):
            return [FrameSourceOpener("bad-test", boom, boom), FrameSourceOpener("bad-open", lambda s: True, boom),
                    FrameSourceOpener("not-a-source", lambda s: True, lambda s: object()), "not an opener"]

    pm.register(Broken(), name="broken")
    with pytest.warns(UserWarning) as record:
        src = open_source(rgb, plugin_manager=pm)
    assert isinstance(src, ArraySource)  # the built-in still opens it
    np.testing.assert_array_equal(src.frame(0), rgb[0])
    messages = " ".join(str(w.message) for w in record)
    for expected in ("not FrameSourceOpener", "bad-test", "bad-open", "not a FrameSource"):
        assert expected in messages


def test_global_manager_is_used(rgb, monkeypatch) -> None:
    from edgetam_kit.plugins import manager as plugins

    monkeypatch.setattr(plugins, "_manager", PluginManager.create(autoload=False))
    assert isinstance(open_source(rgb), ArraySource)


# --- synthetic + memory ---------------------------------------------------------------------

def test_synthetic_source() -> None:
    src = SyntheticSource(10_000, 96, 128, channels=None, dtype=np.uint16, seed=1)
    assert src.shape == (10_000, 96, 128) and src.dtype == np.uint16
    last = src.frame(9_999)
    again = SyntheticSource(10_000, 96, 128, channels=None, dtype=np.uint16, seed=1)
    np.testing.assert_array_equal(last, again.frame(-1))  # seeded: the same frames every time
    mask = src.mask(9_999)
    x, y = src.center(9_999)
    assert mask[int(round(y)), int(round(x))] and 0.02 < mask.mean() < 0.2
    assert last[mask].mean() > last[~mask].mean() + 20_000  # the disk is bright
    assert not np.array_equal(src.mask(0), src.mask(10))  # it moves
    with pytest.raises(ValueError, match="dtype must be"):
        SyntheticSource(3, 8, 8, dtype=np.int8)


def _peak_growth(src: FrameSource, n: int) -> tuple[int, int]:
    """(peak while reading 1 frame, peak while reading n frames one by one) over a baseline."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        src.frame(0)
        one = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        for i in range(n):
            src.frame(i)
        many = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return one, many


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssFile from /proc (Linux)")
def test_memory_mapped_tiff_keeps_rss_flat(tmp_path) -> None:
    """Mapped pages count in RSS once touched; the source releases each frame's pages after copying
    it out, so reading a 64 MiB stack through the map does not grow the process's RSS."""
    tifffile = pytest.importorskip("tifffile")

    def rss_file_kib() -> int:
        status = Path("/proc/self/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("RssFile:")).split()[1])

    stack = np.random.default_rng(0).integers(0, 65535, (128, 512, 512), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", stack)
    src = TiffStackSource(tmp_path / "big.tif")
    assert src._mm is not None
    before = rss_file_kib()
    for i in range(len(src)):
        assert src.frame(i)[7, 11] == stack[i, 7, 11]
    assert rss_file_kib() - before < 8 * 1024  # the whole stack would be 64 MiB


@pytest.mark.parametrize("kind", ["synthetic", "tiff", "video"])
def test_reading_all_frames_keeps_memory_flat(kind, tmp_path) -> None:
    n = 200
    syn = SyntheticSource(n, 64, 96, channels=3, seed=2)
    if kind == "synthetic":
        src: FrameSource = syn
    elif kind == "tiff":
        tifffile = pytest.importorskip("tifffile")
        tifffile.imwrite(tmp_path / "s.tif", np.stack(list(syn)), compression="zlib")  # page by page
        src = TiffStackSource(tmp_path / "s.tif")
    else:
        src = VideoSource(write_video(tmp_path / "s.mp4", np.stack(list(syn)), gop=20))
    frame_bytes = int(np.prod(src.shape[1:])) * src.dtype.itemsize
    one, many = _peak_growth(src, n)
    assert many <= one + 2 * frame_bytes, (one, many, frame_bytes)
