"""Regression tests for issue 18 (reliability): one test per defect, each failing on the code
before its fix. Kill tests (SIGKILL at random points) are in test_reliability_kill.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgetam_kit as ek
from edgetam_kit.cli import main
from edgetam_kit.io.export import MaskSet, export_masks


def _square(hw: tuple[int, int], y0: int, x0: int, side: int) -> np.ndarray:
    m = np.zeros(hw, bool)
    m[y0:y0 + side, x0:x0 + side] = True
    return m


# ----------------------------------------------------------------------------- defect 1
@pytest.mark.parametrize("fmt", ["tiff", "zarr"])
def test_1_export_names_with_the_same_stem_do_not_collide(tmp_path, fmt) -> None:
    """a.png (1 mask) and a.jpg (2 masks) used to be written both to out/a.tif: the first was lost."""
    import tifffile
    import zarr

    hw = (32, 40)
    items = [MaskSet("a.png", hw, [_square(hw, 2, 2, 5)]),
             MaskSet("a.jpg", hw, [_square(hw, 2, 2, 5), _square(hw, 20, 20, 6)]),
             MaskSet("b.png", hw, [])]
    paths = export_masks(items, tmp_path / "out", format=fmt)
    assert len(set(paths)) == 3, paths
    suffix = ".tif" if fmt == "tiff" else ".zarr"
    assert [p.name for p in paths] == [f"a.png{suffix}", f"a.jpg{suffix}", f"b{suffix}"]
    read = (lambda p: tifffile.imread(p)) if fmt == "tiff" else (
        lambda p: np.asarray(zarr.open_group(str(p), mode="r")["labels/masks/0"]))
    assert [int(read(p).max()) for p in paths] == [1, 2, 0]


def test_1_export_refuses_names_that_stay_ambiguous(tmp_path) -> None:
    hw = (8, 8)
    with pytest.raises(ValueError, match=r"'x/a.png' and 'y/a.png' would both be written as 'a.png'"):
        export_masks([MaskSet("x/a.png", hw, []), MaskSet("y/a.png", hw, [])], tmp_path, format="tiff")
    with pytest.raises(ValueError, match=r"items\[0\].name must be a non-empty file name"):
        export_masks([MaskSet("", hw, [])], tmp_path, format="tiff")
    assert not list(tmp_path.iterdir()), "nothing may be written when the names are refused"


@pytest.mark.parametrize("fmt,suffix", [("tiff", ".tif"), ("zarr", ".zarr")])
def test_1_cli_auto_writes_one_file_per_image_for_same_stems(tiny_refs, tmp_path, capsys, fmt, suffix) -> None:
    import skimage.io

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.png", "a.jpg"):
        skimage.io.imsave(folder / name, (rng.random((48, 56, 3)) * 255).astype(np.uint8), check_contrast=False)
    out = tmp_path / "out"
    rc = main(["auto", str(folder), "--checkpoint", str(tiny_refs.hf_folder), "-o", str(out), "--format", fmt,
               "--points-per-side", "2", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    written = said.split("wrote ")[1].split(" (")[0].split(", ")
    assert len(written) == 2 and len(set(written)) == 2, said
    assert sorted(p.name for p in out.iterdir()) == [f"a.jpg{suffix}", f"a.png{suffix}"]


# ----------------------------------------------------------------------------- defects 2 and 3
@pytest.fixture(scope="module")
def video_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ek.save_model(ek.build_random_model("tiny", seed=4), tmp_path_factory.mktemp("ckpt") / "tiny")


def _png_folder_with_truncated_last(folder: Path, n: int = 4, side: int = 64) -> None:
    import skimage.io

    from video_runners import moving_disks

    folder.mkdir()
    for t, f in enumerate(moving_disks(n, side)):
        skimage.io.imsave(folder / f"{t:03d}.png", f, check_contrast=False)
    last = folder / f"{n - 1:03d}.png"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_2_failed_track_keeps_the_previous_output(video_ckpt, tmp_path, capsys, suffix) -> None:
    """A truncated frame used to leave OUT replaced by a partial stack whose last frame was zeros."""
    import tifffile
    import zarr

    _png_folder_with_truncated_last(tmp_path / "frames")
    out = tmp_path / f"keep{suffix}"
    good = np.arange(2 * 8 * 8, dtype=np.uint32).reshape(2, 8, 8)
    if suffix == ".tif":
        tifffile.imwrite(out, good)
    else:
        zarr.open(str(out), mode="w", shape=good.shape, dtype="uint32")[...] = good
    before = _snapshot(out)
    rc = main(["track", str(tmp_path / "frames"), "--prompt", "0:1:20,25", "--checkpoint", str(video_ckpt),
               "-o", str(out), "--direction", "forward"])
    assert rc == 2, capsys.readouterr()
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", out.name], "no temporary files left"


def test_3_zarr_rewrite_replaces_the_folder_whole(tmp_path) -> None:
    """A rewrite of an existing OME-Zarr export yields exactly the new content; leftovers of a
    killed writer (a dead pid's .tmp folder) are removed by the next write."""
    import zarr

    hw = (16, 16)
    out = tmp_path / "one.zarr"
    export_masks(MaskSet("one.png", hw, [_square(hw, 0, 0, 4), _square(hw, 8, 8, 4)]), out, format="zarr")
    (out / "stale-extra-file").write_text("from an older export")
    dead = tmp_path / ".one.zarr.999999999-0123abcd.tmp"  # a writer (pid 999999999) killed midway
    dead.mkdir()
    (dead / ".zgroup").write_text("{}")
    export_masks(MaskSet("one.png", hw, [_square(hw, 0, 0, 4)]), out, format="zarr")
    assert int(np.asarray(zarr.open_group(str(out), mode="r")["labels/masks/0"]).max()) == 1
    assert not (out / "stale-extra-file").exists(), "the old folder must be replaced, not merged into"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.zarr"], "leftovers must be cleaned"


# ----------------------------------------------------------------------------- defect 5
def test_5_damaged_cache_entry_is_re_encoded_not_served(tiny_refs, tmp_path) -> None:
    """Deleting one chunk of an entry used to be a hit with zero-filled features, forever."""
    from edgetam_kit.io.cache import EmbeddingCache, image_signature

    model = ek.load_model(tiny_refs.hf_folder)
    rng = np.random.default_rng(5)
    image = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    fresh = ek.ImagePredictor(model)
    fresh.set_image(image)
    want = fresh.predict(points=[[30, 20]], labels=[1])
    cache = EmbeddingCache(tmp_path / "c")
    ek.ImagePredictor(model, cache=cache).set_image(image)
    entry = cache.entry_path(image_signature(image, model, fresh.percentiles, None, None))
    chunks = [p for p in (entry / "high_res_0").rglob("*") if p.is_file() and p.name not in
              ("zarr.json", ".zarray", ".zattrs")]
    assert chunks, "the entry's chunk files"
    chunks[0].unlink()
    for attempt in range(2):  # re-encoded once, then the repaired entry is a hit
        cache = EmbeddingCache(tmp_path / "c")
        pred = ek.ImagePredictor(model, cache=cache)
        pred.set_image(image)
        assert (cache.hits, cache.misses) == ((0, 1) if attempt == 0 else (1, 0))
        got = pred.predict(points=[[30, 20]], labels=[1])
        np.testing.assert_array_equal(got.masks, want.masks)
        np.testing.assert_allclose(got.logits, want.logits, atol=1e-5)


def test_5_file_at_an_entry_path_is_replaced(tiny_refs, tmp_path) -> None:
    """A file where an entry's folder goes used to raise NotADirectoryError."""
    from edgetam_kit.io.cache import EmbeddingCache, image_signature

    model = ek.load_model(tiny_refs.hf_folder)
    image = np.full((40, 50, 3), 90, np.uint8)
    cache = EmbeddingCache(tmp_path / "c")
    entry = cache.entry_path(image_signature(image, model, ek.ImagePredictor(model).percentiles, None, None))
    entry.parent.mkdir(parents=True)
    entry.write_text("not an entry")
    ek.ImagePredictor(model, cache=cache).set_image(image)
    assert entry.is_dir() and len(cache) == 1


# ----------------------------------------------------------------------------- defect 6
def test_6_predictor_shared_between_threads_sees_one_image(tiny_refs) -> None:
    """One thread switches between two images of different sizes while another predicts: every
    result must be exactly one image's (without a lock, 32 of 160 matched neither)."""
    import sys
    import threading

    model = ek.load_model(tiny_refs.hf_folder)
    rng = np.random.default_rng(6)
    images = [(rng.random((48, 64, 3)) * 255).astype(np.uint8), (rng.random((72, 40, 3)) * 255).astype(np.uint8)]
    want = []
    for img in images:
        p = ek.ImagePredictor(model)
        p.set_image(img)
        want.append(p.predict(points=[[20, 20]], labels=[1]))
    pred = ek.ImagePredictor(model)
    pred.set_image(images[0])
    stop = threading.Event()
    errors: list[BaseException] = []

    def switch() -> None:
        try:
            k = 0
            while not stop.is_set():
                k += 1
                pred.set_image(images[k % 2])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    t = threading.Thread(target=switch)
    t.start()
    try:
        results = [pred.predict(points=[[20, 20]], labels=[1]) for _ in range(60)]
    finally:
        stop.set()
        t.join(timeout=60)
        sys.setswitchinterval(old)
    assert not errors, errors
    mixed = 0
    for r in results:
        same = [w for w in want if w.masks.shape == r.masks.shape]
        ok = len(same) == 1 and np.array_equal(same[0].masks, r.masks) and np.allclose(
            same[0].logits, r.logits, atol=1e-5) and np.allclose(same[0].scores, r.scores, atol=1e-5)
        mixed += not ok
    assert mixed == 0, f"{mixed} of {len(results)} results matched neither image"


# ----------------------------------------------------------------------------- defect 7
@pytest.mark.parametrize("how", ["hf_folder", "pt", "build"])
def test_7_model_made_under_inference_mode_predicts_and_tracks(tiny_refs, video_ckpt, how) -> None:
    """A model loaded (or built) under torch.inference_mode() used to break predict and tracking
    ("Inference tensors do not track version counter"). Already fixed on main; kept as a guard."""
    import torch

    with torch.inference_mode():
        model = {"hf_folder": lambda: ek.load_model(video_ckpt), "pt": lambda: ek.load_model(tiny_refs.pt_path),
                 "build": lambda: ek.build_random_model("tiny", seed=4)}[how]()
    rng = np.random.default_rng(7)
    img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    pred = ek.ImagePredictor(model)
    pred.set_image(img)
    assert pred.predict(points=[[20, 20]], labels=[1]).masks.shape == (3, 48, 64)
    session = ek.VideoTracker(model).start(np.stack([img, img[::-1], img]))
    session.add_prompt(0, 1, points=[[20, 20]], labels=[1])
    assert [f for f, _ids, _m in session.propagate("both")] == [0, 1, 2]
    with torch.inference_mode():  # and used under it
        pred.set_image(img[::-1])
        assert pred.predict(box=[5, 5, 40, 30]).masks.shape == (3, 48, 64)


# ----------------------------------------------------------------------------- defect 10
def test_10_remove_object_or_reset_inside_propagate(video_ckpt) -> None:
    """remove_object / reset inside a propagate() loop used to raise "stack expects a non-empty
    TensorList"; now the remaining objects are tracked, and an empty session ends the loop."""
    from video_runners import moving_disks

    model = ek.load_model(video_ckpt)
    session = ek.VideoTracker(model).start(moving_disks(5, 64))
    session.add_prompt(0, 1, points=[[20, 25]], labels=[1])
    session.add_prompt(0, 2, points=[[45, 15]], labels=[1])
    seen = []
    for frame, ids, masks in session.propagate("forward"):
        seen.append((frame, list(ids), masks.shape[0]))
        if frame == 1:
            session.remove_object(1)
    assert seen == [(0, [1, 2], 2), (1, [1, 2], 2), (2, [2], 1), (3, [2], 1), (4, [2], 1)]
    frames = []
    for frame, _ids, _masks in session.propagate("forward"):
        frames.append(frame)
        if frame == 2:
            session.remove_object(2)  # the last one
    assert frames == [0, 1, 2]
    session.add_prompt(0, 3, points=[[20, 25]], labels=[1])
    frames = []
    for frame, _ids, _masks in session.propagate("forward"):
        frames.append(frame)
        session.reset()
    assert frames == [0]
    session.add_prompt(1, 4, box=[10, 10, 40, 40])
    assert [f for f, _i, _m in session.propagate("both")] == [1, 2, 3, 4, 0], "the session stays usable"


# ----------------------------------------------------------------------------- defect 11
def test_11_crop_layers_on_a_small_image(tiny_refs) -> None:
    """crop_n_layers=3 on a 20x30 image used to make empty crops: "image is empty (shape (0, 5, 3))"."""
    from edgetam_kit.engine.masks import crop_boxes

    for hw in [(20, 30), (1, 1), (3, 200), (64, 64)]:
        boxes, layers = crop_boxes(hw, 3, 512 / 1500)
        assert len(boxes) == len(layers) and len({tuple(b) for b in boxes}) == len(boxes)
        assert all(0 <= b[0] < b[2] <= hw[1] and 0 <= b[1] < b[3] <= hw[0] for b in boxes), (hw, boxes)
    # the generator end to end (one layer on a 1-px-high image: the same empty crop, 3 encodes not 77)
    model = ek.load_model(tiny_refs.hf_folder)
    anns = ek.AutoMaskGenerator(model, points_per_side=2, crop_n_layers=1).generate(np.zeros((1, 30), np.uint8))
    assert isinstance(anns, list)


# ----------------------------------------------------------------------------- defect 13
def test_13_empty_points_are_refused_everywhere(video_ckpt) -> None:
    """add_prompt(points=np.zeros((0, 2))) used to be accepted (a mask from no prompt); predict said
    "decode needs points..." and a tiled image "zero-size array". Fixed on main; kept as a guard."""
    model = ek.load_model(video_ckpt)
    img = np.zeros((40, 50, 3), np.uint8)
    session = ek.VideoTracker(model).start(np.stack([img, img]))
    pred = ek.ImagePredictor(model)
    pred.set_image(img)
    tiled = ek.ImagePredictor(model, tiling=True, tile_size=32)
    tiled.set_image(np.zeros((64, 80, 3), np.uint8))
    for empty in (np.zeros((0, 2)), [], np.zeros((0,))):
        with pytest.raises(ValueError, match=r"points must be shaped \(P, 2\) with P >= 1"):
            session.add_prompt(0, 1, points=empty)
        with pytest.raises(ValueError, match=r"points must be shaped \(P, 2\) with P >= 1"):
            pred.predict(points=empty)
        with pytest.raises(ValueError, match=r"points must be shaped \(P, 2\) with P >= 1"):
            tiled.predict(points=empty)
        with pytest.raises(ValueError, match=r"points\[0\] must be shaped \(P, 2\) with P >= 1"):
            pred.predict_batch(points=[empty])
    assert session.obj_ids == []


# ----------------------------------------------------------------------------- defect 12
def test_12_huge_ids_sizes_and_odd_devices_are_named_errors(video_ckpt, tmp_path, capsys) -> None:
    """obj_id 2**33 / --prompt 0:1099511627776:1,1 used to give OverflowError tracebacks (or a label
    silently wrapped to 0), --points-per-side 100000 tried to allocate 74.5 GiB, --device meta a traceback."""
    from edgetam_kit.io.labels import paint_labels

    model = ek.load_model(video_ckpt)
    img = (np.random.default_rng(12).random((40, 50, 3)) * 255).astype(np.uint8)
    session = ek.VideoTracker(model).start(np.stack([img, img]))
    with pytest.raises(ValueError, match=r"obj_id must be an int in \[0, 4294967295\]"):
        session.add_prompt(0, 2**33, points=[[5, 5]])
    with pytest.raises(ValueError, match=r"prompts\[0\].obj_id must be an int in \[1, 4294967295\]"):
        ek.segment_volume(np.stack([img, img]), [{"frame": 0, "obj_id": 2**33, "points": [[5, 5]]}], model)
    with pytest.raises(ValueError, match=r"ids must be ints in \[0, 4294967295\]"):
        paint_labels(np.ones((1, 4, 4), bool), [2**33])
    with pytest.raises(ValueError, match=r"points_per_side must be an int in \[1, 1024\]"):
        ek.AutoMaskGenerator(model, points_per_side=100000)
    with pytest.raises(ValueError, match=r"device must be cpu, cuda\[:N\], mps or xpu"):
        ek.load_model(video_ckpt, device="meta")
    np.save(tmp_path / "v.npy", np.stack([img, img]))
    import skimage.io

    skimage.io.imsave(tmp_path / "a.png", img, check_contrast=False)
    cases = [
        (["track", str(tmp_path / "v.npy"), "--prompt", "0:1099511627776:1,1", "-o", str(tmp_path / "l.tif")],
         r"--prompt expects FRAME:OBJ:X,Y \(frame >= 0, object id >= 1 and <= 4294967295\)"),
        (["auto", str(tmp_path / "a.png"), "--points-per-side", "100000", "-o", str(tmp_path / "m.json")],
         r"points_per_side must be an int in \[1, 1024\]"),
        (["auto", str(tmp_path / "a.png"), "--device", "meta", "-o", str(tmp_path / "m.json")],
         r"--device must be cpu, cuda\[:N\], mps or xpu"),
    ]
    import re

    for argv, pattern in cases:
        assert main([*argv, "--checkpoint", str(video_ckpt)]) == 2, argv
        err = capsys.readouterr().err
        assert re.search(pattern, err), err


# ----------------------------------------------------------------------------- defect 14
def test_14_point_grids_nan_and_ndarray(tiny_refs) -> None:
    """point_grids with NaN used to be accepted; an ndarray raised "truth value of an array is ambiguous"."""
    from edgetam_kit.engine.automask import AutoMaskConfig

    grid = np.array([[0.25, 0.5], [0.75, 0.5]])
    with pytest.raises(ValueError, match=r"point_grids\[0\] must be an \(N, 2\) array of finite"):
        AutoMaskConfig(points_per_side=None, point_grids=[np.array([[np.nan, 0.5]])])
    with pytest.raises(ValueError, match=r"point_grids\[0\] must be an \(N, 2\) array of finite"):
        AutoMaskConfig(points_per_side=None, point_grids=[[["a", "b"]]])
    with pytest.raises(TypeError, match=r"point_grids must be a list of \(N, 2\) arrays"):
        AutoMaskConfig(points_per_side=None, point_grids=5)
    one = AutoMaskConfig(points_per_side=None, point_grids=grid)  # one layer's grid as an array
    assert len(one.grids()) == 1 and np.array_equal(one.grids()[0], grid)
    two = AutoMaskConfig(points_per_side=None, point_grids=np.stack([grid, grid]), crop_n_layers=1)
    assert len(two.grids()) == 2
    model = ek.load_model(tiny_refs.hf_folder)
    anns = ek.AutoMaskGenerator(model, points_per_side=None, point_grids=grid,
                                pred_iou_thresh=0, stability_score_thresh=0).generate(np.zeros((32, 40, 3), np.uint8))
    assert isinstance(anns, list)


# ----------------------------------------------------------------------------- defect 4 (+ unclear read errors)
def _cut(path: Path, frac: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * frac)])


@pytest.mark.parametrize("compression", ["zlib", None])
def test_4_truncated_tiff_stack_is_refused(video_ckpt, tmp_path, capsys, compression) -> None:
    """A zlib TIFF stack cut in half used to open as 1 frame (a tifffile log line only), and
    `track`/`embed` exited 0; uncompressed it said "mmap length is greater than file size"."""
    import tifffile

    from video_runners import moving_disks

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, moving_disks(6, 64)[..., 0], compression=compression)
    assert len(ek.open_source(str(path))) == 6
    _cut(path)
    with pytest.raises(ValueError, match=r"stack.tif is truncated or damaged"):
        ek.open_source(str(path))
    for argv in (["embed", str(path), "-o", str(tmp_path / "cache")],
                 ["track", str(path), "--prompt", "0:1:20,20", "-o", str(tmp_path / "l.tif")]):
        assert main([*argv, "--checkpoint", str(video_ckpt)]) == 2, argv
        assert "stack.tif is truncated or damaged" in capsys.readouterr().err
    assert not (tmp_path / "l.tif").exists()


def test_4_unreadable_frames_and_series_are_named(tmp_path) -> None:
    """A folder whose first PNG is corrupt said "need at least one array to stack"; a corrupt later
    PNG raised PIL's UnidentifiedImageError; series=5 an IndexError."""
    import skimage.io
    import tifffile

    from video_runners import moving_disks

    frames = moving_disks(3, 32)
    for name in ("first", "later"):
        folder = tmp_path / name
        folder.mkdir()
        for t, f in enumerate(frames):
            skimage.io.imsave(folder / f"{t}.png", f, check_contrast=False)
        (folder / ("0.png" if name == "first" else "2.png")).write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read frame 0 \(0.png\)"):
        ek.open_source(str(tmp_path / "first"))
    src = ek.open_source(str(tmp_path / "later"), check_sizes=False)
    with pytest.raises(ValueError, match=r"cannot read frame 2 \(2.png\)"):
        src.frame(2)
    tifffile.imwrite(tmp_path / "one.tif", frames[..., 0])
    with pytest.raises(ValueError, match=r"series must be an int in \[0, 0\]"):
        ek.open_source(str(tmp_path / "one.tif"), series=5)


# ----------------------------------------------------------------------------- defect 15
def test_15_two_channel_tiff_is_one_image_everywhere(video_ckpt, tmp_path, capsys) -> None:
    """`embed two_ch.tif` (H x W x 2) used to read 64 frames of 48x2 and exit 0 where `segment`
    on the same file says "2 channels"; now both read one 2-channel image."""
    import tifffile

    img = (np.random.default_rng(15).random((64, 48, 2)) * 255).astype(np.uint8)
    path = tmp_path / "two_ch.tif"
    tifffile.imwrite(path, img, compression="zlib")
    src = ek.open_source(str(path))
    assert src.shape == (1, 64, 48, 2) and np.array_equal(src.frame(0), img)
    for argv in (["embed", str(path), "-o", str(tmp_path / "cache")],
                 ["segment", str(path), "--point", "10,10", "-o", str(tmp_path / "m.png")]):
        assert main([*argv, "--checkpoint", str(video_ckpt)]) == 2, argv
        assert "2 channels" in capsys.readouterr().err, argv
    stack = np.zeros((3, 64, 48, 2), np.uint8)  # a stack of 2-channel frames: 3 frames
    tifffile.imwrite(tmp_path / "stack2.tif", stack)
    assert ek.open_source(str(tmp_path / "stack2.tif")).shape == (3, 64, 48, 2)
    tifffile.imwrite(tmp_path / "grey.tif", np.zeros((5, 64, 48), np.uint8))  # a plain grey stack stays one
    assert ek.open_source(str(tmp_path / "grey.tif")).shape == (5, 64, 48)


# ----------------------------------------------------------------------------- defect 16
def test_16_same_correction_twice_gives_the_same_result(video_ckpt) -> None:
    """The second of two identical corrections on a tracked frame used to be decoded without
    memory: a different mask, and different later frames."""
    from video_runners import moving_disks

    model = ek.load_model(video_ckpt)
    session = ek.VideoTracker(model).start(moving_disks(6, 64))
    session.add_prompt(0, 1, points=[[20, 25]], labels=[1])
    list(session.propagate("forward"))
    first = session.add_prompt(3, 1, points=[[26, 29], [40, 10]], labels=[1, 0])
    after_first = {f: m.copy() for f, _ids, m in session.propagate("forward", start=3)}
    second = session.add_prompt(3, 1, points=[[26, 29], [40, 10]], labels=[1, 0])
    after_second = {f: m.copy() for f, _ids, m in session.propagate("forward", start=3)}
    assert np.array_equal(first.mask, second.mask) and abs(first.score - second.score) < 1e-5
    assert after_first.keys() == after_second.keys() == {3, 4, 5}
    for f in after_first:
        np.testing.assert_array_equal(after_first[f], after_second[f], err_msg=f"frame {f}")


# ----------------------------------------------------------------------------- unclear errors
@pytest.fixture(scope="module")
def tiny_model(video_ckpt) -> ek.EdgeTam:
    return ek.load_model(video_ckpt)


def test_errors_images_channels_percentiles(tiny_model) -> None:
    """float64 above float32's range was "NaN or infinite"; bf16 tensors "unsupported ScalarType";
    channels=1.5/'rgb' raw errors and True read as channel 1; percentiles checked only on 16-bit."""
    import torch

    pred = ek.ImagePredictor(tiny_model)
    big = np.full((40, 50), 1e39, np.float64)
    big[10:20, 10:20] = 3e39
    pred.set_image(big)  # finite: rescaled by percentiles like any other float image
    pred.set_image(torch.rand(40, 50, 3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="image contains NaN or infinite values"):
        pred.set_image(np.full((40, 50), np.inf))
    for bad in (1.5, "rgb", True, [0, 1], [True, 0, 1]):
        with pytest.raises(TypeError, match=r"channels must be None, one channel index \(int\) or three"):
            pred.set_image(np.zeros((40, 50, 4), np.uint8), channels=bad)
    for bad in ((99, 1), "x", (1, 2, 3), (-1, 50)):
        with pytest.raises(ValueError, match=r"percentiles must be \(low, high\) with 0 <= low < high <= 100"):
            ek.ImagePredictor(tiny_model, percentiles=bad)
        with pytest.raises(ValueError, match=r"percentiles must be \(low, high\)"):
            ek.VideoTracker(tiny_model, percentiles=bad)
    with pytest.raises(TypeError, match=r"channels must be None"):
        ek.VideoTracker(tiny_model, channels="x")
    with pytest.raises(ValueError, match=r"max_conditioning_frames must be None or an int >= 1, got True"):
        ek.VideoTracker(tiny_model, max_conditioning_frames=True)
    with pytest.raises(ValueError, match=r"max_memory_frames must be an int"):
        ek.VideoTracker(tiny_model, max_memory_frames=True)


def test_errors_prompts_and_progress(tiny_model) -> None:
    """points with requires_grad were a RuntimeError; predict_batch(image_index=0.0) and
    points={"a": ...} raw errors; propagate(progress=1, cancel=1) unchecked until a frame was done."""
    import torch

    img = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    pred = ek.ImagePredictor(tiny_model)
    pred.set_image(img)
    pts = torch.tensor([[10.0, 12.0]], requires_grad=True)
    np.testing.assert_array_equal(pred.predict(points=pts).masks, pred.predict(points=[[10, 12]]).masks)
    with pytest.raises(TypeError, match=r"image_index must be an int or a list of ints \(one per object\), got 0.0"):
        pred.predict_batch(points=[[[5, 5]]], image_index=0.0)
    with pytest.raises(TypeError, match=r"points must be a list with one entry per object, got dict"):
        pred.predict_batch(points={"a": [[5, 5]]})
    session = ek.VideoTracker(tiny_model).start(np.stack([img, img]))
    session.add_prompt(0, 1, points=[[5, 5]])
    with pytest.raises(TypeError, match=r"progress must be True, a callable"):
        session.propagate(progress=1)
    with pytest.raises(TypeError, match=r"cancel must be a callable"):
        session.propagate(cancel=1)


def test_errors_coco_export(tmp_path) -> None:
    """numpy float32 scores were "not JSON serializable"; bad RLE counts silently accepted;
    format=['coco'] "unhashable type"."""
    import json

    m = _square((8, 8), 1, 1, 3)
    ann = {"segmentation": m, "predicted_iou": np.float32(0.5), "stability_score": np.float64(0.9),
           "point_coords": np.array([[1.0, 2.0]])}
    (path,) = export_masks(MaskSet("a.png", (8, 8), [ann]), tmp_path / "a.json", format="coco")
    rec = json.loads(path.read_text())["annotations"][0]
    assert rec["score"] == 0.5 and rec["point_coords"] == [[1.0, 2.0]]
    for seg, pattern in (({"size": [8, 8], "counts": [1, 2, 3]}, "must add up to H \\* W = 64"),
                         ({"size": [8, 8], "counts": "zzzz"}, "segmentation must be a COCO RLE"),
                         ({"size": [4, 4], "counts": [16]}, r"of the image's size \(8, 8\)"),
                         ({"size": [8, 8], "counts": None}, "counts must be a list of run lengths")):
        with pytest.raises(ValueError, match=r"a.png: annotations\[0\]: .*" + pattern):
            export_masks(MaskSet("a.png", (8, 8), [{"segmentation": seg}]), tmp_path / "b.json", format="coco")
    with pytest.raises(TypeError, match=r"format must be an exporter name \(str\)"):
        export_masks(MaskSet("a.png", (8, 8), [m]), tmp_path, format=["coco"])
    assert not (tmp_path / "b.json").exists()


def test_errors_cache_marker_and_checkpoint_spec(tiny_model, tmp_path, monkeypatch) -> None:
    """A garbage cache format marker warned "ignored" yet was used; CheckpointSpec(source=12345)
    failed later without naming its plugin."""
    import edgetam_kit.plugins.manager as plugins
    from edgetam_kit.io.cache import EmbeddingCache
    from edgetam_kit.plugins import PluginManager

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "edgetam-cache.json").write_text("garbage{")
    img = np.full((40, 50, 3), 60, np.uint8)
    for _ in range(2):
        with pytest.warns(UserWarning, match="its entries are ignored and nothing is written"):
            cache = EmbeddingCache(tmp_path / "c")
        ek.ImagePredictor(tiny_model, cache=cache).set_image(img)
        assert cache.hits == 0 and len(cache) == 0

    class BadSpec:
        @ek.hookimpl
        def edgetam_kit_checkpoints(self):
            return [ek.CheckpointSpec("numbers", 12345)]

    pm = PluginManager.create(autoload=False)
    pm.register(BadSpec(), name="bad-spec-plugin")
    monkeypatch.setattr(plugins, "_manager", pm)
    with pytest.warns(UserWarning, match=r"'bad-spec-plugin' failed at edgetam_kit_checkpoints: .*source=12345"):
        assert "numbers" not in pm.checkpoints()


# ----------------------------------------------------------------------------- defect 9
def test_9_unwritable_cache_is_used_read_only(tiny_model, video_ckpt, tmp_path, monkeypatch, capsys) -> None:
    """A cache folder that cannot be written used to raise PermissionError after the encode (the
    features lost); the CLI had no read-only option."""
    import pathlib

    from edgetam_kit.io.cache import EmbeddingCache

    shared = tmp_path / "shared"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):  # a folder we may not write (tests run as root: chmod would not stop us)
        if str(self).startswith(str(shared)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    img = (np.random.default_rng(9).random((40, 50, 3)) * 255).astype(np.uint8)
    cache = EmbeddingCache(shared)
    pred = ek.ImagePredictor(tiny_model, cache=cache)
    with pytest.warns(UserWarning, match=r"cannot write to .*shared \(PermissionError.*using it read-only"):
        pred.set_image(img)
    assert pred.is_image_set and cache.readonly
    plain = ek.ImagePredictor(tiny_model)
    plain.set_image(img)
    np.testing.assert_array_equal(pred.predict(points=[[10, 10]]).masks, plain.predict(points=[[10, 10]]).masks)
    monkeypatch.setattr(pathlib.Path, "mkdir", real_mkdir)

    import skimage.io

    skimage.io.imsave(tmp_path / "a.png", img, check_contrast=False)
    ro = tmp_path / "ro-cache"
    rc = main(["auto", str(tmp_path / "a.png"), "-o", str(tmp_path / "m.json"), "--cache", str(ro),
               "--cache-readonly", "--points-per-side", "2", "--quiet", "--checkpoint", str(video_ckpt)])
    assert rc == 0, capsys.readouterr().err
    assert not ro.exists(), "a read-only cache is never written"


# ----------------------------------------------------------------------------- defect 8 (partly)
def test_8_broken_backend_plugin_falls_back_to_the_builtin(video_ckpt, monkeypatch) -> None:
    """Backend("eager", prepare=<raises>) from a plugin used to make every load_model raise."""
    import edgetam_kit.plugins.manager as plugins
    from edgetam_kit.plugins import PluginManager
    from edgetam_kit.runtime import Backend

    img = (np.random.default_rng(8).random((40, 50, 3)) * 255).astype(np.uint8)
    plain = ek.ImagePredictor(ek.load_model(video_ckpt))
    plain.set_image(img)

    def prepare(model, precision):
        raise RuntimeError("no accelerator here")

    class BrokenBackend:
        @ek.hookimpl
        def edgetam_kit_backends(self):
            return [Backend("eager", prepare, "a broken override")]

    pm = PluginManager.create(autoload=False)
    pm.register(BrokenBackend(), name="broken-backend")
    monkeypatch.setattr(plugins, "_manager", pm)
    with pytest.warns(UserWarning, match=r"'broken-backend' failed at backend 'eager' prepare: RuntimeError"):
        model = ek.load_model(video_ckpt)
    pred = ek.ImagePredictor(model)
    pred.set_image(img)
    np.testing.assert_array_equal(pred.predict(points=[[10, 10]]).masks, plain.predict(points=[[10, 10]]).masks)
    assert [e.plugin for e in pm.errors] == ["broken-backend"]


def test_8_plugin_failures_survive_warning_filters_and_sys_exit(monkeypatch, capsys) -> None:
    """With PYTHONWARNINGS=error a broken plugin's warning became a traceback; a plugin calling
    sys.exit(3) at import ended the host."""
    import warnings

    import edgetam_kit.plugins.manager as plugins
    from edgetam_kit.plugins import PluginManager

    class ExitingEntryPoint:
        name, value = "exits", "exits_plugin"

        def load(self):
            raise SystemExit(3)

    real = plugins.entry_points
    monkeypatch.setattr(plugins, "entry_points", lambda group: [*real(group=group), ExitingEntryPoint()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pm = PluginManager.create(autoload=True)
    assert any(e.plugin == "exits" and "SystemExit" in e.error for e in pm.errors)
    assert "edgetam-kit plugin 'exits' failed at load: SystemExit: 3" in capsys.readouterr().err
    assert "eager" in pm.backends(), "the built-ins still load"
