"""The napari plugin's work without a viewer: the generators of edgetam_kit.napari.work give
exactly what the engine gives for the same inputs, honour cancel, and the helpers convert
coordinates and record edits correctly. Tiny random-weight model saved and loaded from disk."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import edgetam_kit as ek
from edgetam_kit.napari import _sample_data as samples
from edgetam_kit.napari import settings as st
from edgetam_kit.napari import work as w


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ek.EdgeTam:
    folder = tmp_path_factory.mktemp("napari-work-model")
    ek.save_model(ek.build_random_model("tiny", seed=0, video=True), folder)
    return ek.load_model(folder)


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    return samples.cells_zstack()[0][0]


def results(gen) -> list:
    return [item for item in gen if not isinstance(item, w.Progress)]


def test_make_prompt_converts_row_col_to_xy_drops_outside_and_clips_box() -> None:
    p = w.make_prompt([[10, 20], [5, 300], [-3, 4]], [True, False, True], [[2, -5], [40, 30]], (50, 100))
    np.testing.assert_allclose(p.points, [[20, 10]])  # (row 10, col 20) -> (x 20, y 10); others off the plane
    assert p.labels.tolist() == [1]
    np.testing.assert_allclose(p.box, [0, 2, 30, 40])  # x0 clipped from -5 to 0
    assert not p.multimask  # a box makes it unambiguous
    q = w.make_prompt(np.zeros((0, 2)), [], None, (50, 100))
    assert q.empty and q.engine_args() == {"points": None, "labels": None, "box": None}
    with pytest.raises(ValueError, match="positive"):
        w.make_prompt([[1, 1]], [True, False], None, (50, 100))


def test_same_prompt() -> None:
    a = w.make_prompt([[10, 20]], [True], [[2, 5], [40, 30]], (50, 100))
    assert a.same_as(w.make_prompt([[10, 20]], [True], [[40, 30], [2, 5]], (50, 100)))  # same box
    assert not a.same_as(w.make_prompt([[10, 20]], [False], [[2, 5], [40, 30]], (50, 100)))  # label
    assert not a.same_as(w.make_prompt([[10, 21]], [True], [[2, 5], [40, 30]], (50, 100)))  # point
    assert not a.same_as(w.make_prompt([[10, 20]], [True], None, (50, 100)))  # no box
    assert not a.same_as(w.make_prompt([[10, 20], [1, 1]], [True, True], [[2, 5], [40, 30]], (50, 100)))


def test_guess_mode() -> None:
    assert w.guess_mode((64, 64), False) == "2D"
    assert w.guess_mode((64, 64), True) == "2D"
    assert w.guess_mode((5, 64, 64), False, ("0", "1", "2")) == "z-stack"
    assert w.guess_mode((5, 64, 64), False, ("t", "y", "x")) == "time-lapse"
    assert w.guess_mode((5, 64, 64), True) == "RGB video"


def test_click_mask_is_the_predictors_mask(model, stack) -> None:
    pred = ek.ImagePredictor(model)
    pred.set_image(stack[4])
    one = w.make_prompt([[128, 100]], [True], None, (256, 256))
    mask, score = w.click_mask(pred, one)
    r = pred.predict(points=[[100, 128]], labels=[1], multimask=True)
    np.testing.assert_array_equal(mask, r.masks[r.best])
    assert score == pytest.approx(float(r.scores[r.best]))
    assert 0 < mask.sum() < mask.size
    two = w.make_prompt([[128, 100], [40, 40]], [True, False], [[90, 60], [170, 150]], (256, 256))
    mask2, _ = w.click_mask(pred, two)
    r2 = pred.predict(points=[[100, 128], [40, 40]], labels=[1, 0], box=[60, 90, 150, 170], multimask=False)
    np.testing.assert_array_equal(mask2, r2.masks[0])


def test_embed_steps_sets_the_image_and_cancel_keeps_the_previous(model, stack) -> None:
    pred = ek.ImagePredictor(model)
    items = list(w.embed_steps(pred, stack[2], key=("a",)))
    assert isinstance(items[0], w.Progress) and items[-1] == w.Embedded(("a",))
    ref = ek.ImagePredictor(model)
    ref.set_image(stack[2])
    np.testing.assert_array_equal(pred.predict(points=[[50, 60]]).masks, ref.predict(points=[[50, 60]]).masks)
    # a tiled plane is cancelled between tiles: nothing embedded, previous image intact
    tiled = ek.ImagePredictor(model, tiling=True, tile_size=128)
    tiled.set_image(stack[2])
    before = tiled.predict(points=[[50, 60]]).masks
    cancel = threading.Event()
    cancel.set()
    got = list(w.embed_steps(tiled, stack[7], key=("b",), cancel=cancel))
    assert not any(isinstance(i, w.Embedded) for i in got)
    np.testing.assert_array_equal(tiled.predict(points=[[50, 60]]).masks, before)


def test_track_steps_equals_the_tracker_and_cancel_stops_cleanly(model, stack) -> None:
    frames = stack[2:8]  # 6 slices, prompts on the 3rd
    prompts = {1: {2: w.make_prompt([[128, 100]], [True], None, (256, 256))},
               2: {2: w.make_prompt(np.zeros((0, 2)), [], [[30, 30], [90, 100]], (256, 256))}}
    got = results(w.track_steps(model, frames, prompts, "both"))
    session = ek.VideoTracker(model).start(frames)
    session.add_prompt(2, 1, points=[[100, 128]], labels=[1])
    session.add_prompt(2, 2, box=[30, 30, 100, 90])
    ref = list(session.propagate("both"))
    assert [g.frame for g in got] == [f for f, _, _ in ref] == [2, 3, 4, 5, 1, 0]
    for g, (f, ids, masks) in zip(got, ref):
        assert g.obj_ids == ids == [1, 2]
        np.testing.assert_array_equal(g.masks, masks)
    assert got[-1].done == got[-1].total == 6
    assert any(g.masks.any() for g in got) and not all(g.masks.all() for g in got)

    cancel = threading.Event()
    seen = []
    for item in w.track_steps(model, frames, {1: prompts[1]}, "forward", cancel=cancel):
        if isinstance(item, w.FrameResult):
            seen.append(item.frame)
            if len(seen) == 2:
                cancel.set()
    assert seen == [2, 3]  # stops after the frame in flight; no exception escapes
    with pytest.raises(ValueError, match="direction"):
        next(w.track_steps(model, frames, prompts, "sideways"))
    with pytest.raises(ValueError, match="prompts"):
        next(w.track_steps(model, frames, {1: {0: w.ObjectPrompt()}}, "forward"))


def test_automask_steps_labels_are_the_generators_masks(model, stack) -> None:
    opts = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    items = list(w.automask_steps(model, stack[4], first_id=5, **opts))
    assert any(isinstance(i, w.Progress) and i.total > 0 for i in items)
    res = items[-1]
    anns = ek.AutoMaskGenerator(model, **opts).generate(stack[4])
    assert res.count == len(anns) > 0 and res.first_id == 5
    np.testing.assert_array_equal(res.labels, w.labels_from_annotations(anns, (256, 256), 5))
    assert res.labels.dtype == np.uint32 and set(np.unique(res.labels)) - {0} <= set(range(5, 5 + len(anns)))
    cancel = threading.Event()
    cancel.set()
    assert not any(isinstance(i, w.AutoResult) for i in w.automask_steps(model, stack[4], cancel=cancel, **opts))


def test_every_plane_steps_count_planes_keep_ids_unique_and_stop_on_cancel(model, stack) -> None:
    from edgetam_kit.napari import planes as pl

    opts = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    sub = stack[3:6]
    prefixes = pl.plane_prefixes(sub.shape)
    assert prefixes == [(0,), (1,), (2,)] and pl.plane_count(sub.shape) == 3
    assert pl.plane_prefixes((2, 3, 8, 8))[:4] == [(0, 0), (0, 1), (0, 2), (1, 0)] and pl.plane_count((2, 3, 8, 8)) == 6
    assert pl.plane_prefixes((8, 8)) == [()] and pl.plane_count((8, 8)) == 1
    items = list(pl.every_plane_steps(model, sub, prefixes, first_id=4, **opts))
    assert [(p.done, p.total, p.stage) for p in items if isinstance(p, w.Progress)] == [(k, 3, "planes") for k in range(3)]
    res = [i for i in items if isinstance(i, pl.PlaneResult)]
    assert [(r.prefix, r.done, r.total) for r in res] == [((k,), k + 1, 3) for k in range(3)]
    first = 4
    for r in res:  # each plane: the one-plane generator's labels, its ids after the previous plane's
        one = results(w.automask_steps(model, sub[r.prefix], first_id=first, **opts))[-1]
        assert r.first_id == first and r.count == one.count > 0
        np.testing.assert_array_equal(r.labels, one.labels)
        first = r.next_id
    ids = [set(np.unique(r.labels).tolist()) - {0} for r in res]
    assert all(i and not (i & j) for k, i in enumerate(ids) for j in ids[k + 1:])  # unique across the stack
    assert min(ids[0]) >= 4 and max(ids[2]) < first

    def run(stop) -> list:
        cancel, done = threading.Event(), []
        for item in pl.every_plane_steps(model, sub, prefixes, cancel=cancel, **opts):
            done += [item.prefix] if isinstance(item, pl.PlaneResult) else []
            if stop(item):
                cancel.set()
        return done

    for k in (1, 2):  # cancelled between planes, after plane k: planes < k kept
        assert run(lambda item: isinstance(item, pl.PlaneResult) and item.done == k) == prefixes[:k]
    # cancelled within plane 1 (as it starts): only plane 0
    assert run(lambda item: isinstance(item, w.Progress) and item.done == 1) == prefixes[:1]
    single = list(pl.every_plane_steps(model, sub, [(1,)], first_id=2, **opts))  # one plane: batch progress
    assert {p.stage for p in single if isinstance(p, w.Progress)} == {"point batches"}
    assert single[-1].prefix == (1,) and single[-1].first_id == 2 and single[-1].total == 1


def test_write_plane_and_undo_roundtrip() -> None:
    labels = np.zeros((3, 8, 8), np.uint32)
    labels[1, :2] = 7
    original = labels.copy()
    edit = w.Edit("t")
    m = np.zeros((2, 8, 8), bool)
    m[0, 3:5, 3:5] = True
    m[1, 0, :] = True
    w.write_plane(labels, (1,), w.paint_objects(labels[1], [7, 9], m, replace=True), edit)
    assert (labels[1, 1] == 0).all() and (labels[1, 0] == 9).all() and (labels[1, 3:5, 3:5] == 7).all()
    w.write_plane(labels, (1,), np.full((8, 8), 3, np.uint32), edit)  # second write of the same plane
    w.write_plane(labels, (2,), np.ones((8, 8), np.uint32), edit)
    assert w.undo_edit(labels, edit) == [(1,), (2,)]
    np.testing.assert_array_equal(labels, original)
    assert w.next_free_id(labels, taken=[3]) == 8


def test_layer_frames_reads_one_frame_at_a_time() -> None:
    da = pytest.importorskip("dask.array")
    arr = np.arange(2 * 4 * 5 * 6).reshape(2, 4, 5, 6).astype(np.uint16)
    lazy = da.from_array(arr, chunks=(1, 1, 5, 6))
    frames = w.LayerFrames(lazy, (1,), rgb=False)
    assert frames.shape == (4, 5, 6) and len(frames) == 4 and frames.dtype == np.uint16
    np.testing.assert_array_equal(frames.frame(2), arr[1, 2])
    with pytest.raises(ValueError, match="prefix"):
        w.LayerFrames(lazy, (), rgb=False)


def test_settings_roundtrip(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(st.ENV_SETTINGS, str(tmp_path / "s.json"))
    s = st.load_settings()
    assert s.model == "" and s.cache_dir  # defaults when there is no file
    s.remember_model("a")
    s.remember_model("b")
    s.remember_model("a")
    s.cache_dir = ""
    st.save_settings(s)
    again = st.load_settings()
    assert again.model == "a" and again.recent == ["a", "b"] and again.cache_dir == ""
    (tmp_path / "s.json").write_text("not json")
    assert st.load_settings().model == ""


def test_samples() -> None:
    (cells, _, kind), = samples.cells_2d()
    assert kind == "image" and cells.shape == (660, 550) and cells.dtype == np.uint8
    (z, zk, _), = samples.cells_zstack()
    assert z.dtype == np.uint16 and z.shape == (9, 256, 256) and zk["scale"] == (2.0, 1.0, 1.0)
    assert z[4].std() > z[0].std()  # in focus in the middle
    (t, tk, _), = samples.cells_timelapse()
    dy, dx = tk["metadata"]["shift_per_frame_rc"]
    for i in range(len(t) - 1):  # the content of frame i sits (dy, dx) further in frame i + 1
        np.testing.assert_array_equal(t[i + 1, dy:, dx:], t[i, :-dy, :-dx])
    (v, vk, _), = samples.rgb_video()
    assert v.shape == (24, 200, 112, 3) and v.dtype == np.uint8 and vk["rgb"]
