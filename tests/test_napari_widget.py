"""The napari dock widget in a real viewer under Xvfb (pytest-xvfb starts it): opened by plugin
name, samples, clicks -> Labels equal to ImagePredictor's masks, propagation both ways, cancel,
commit/undo, uint16 and scaled layers, RGB channels, shortcuts.

A tiny random-weight model is saved to disk and loaded by the widget through ek.load_model
(remembered in a settings file that EDGETAM_KIT_NAPARI_SETTINGS points at a temporary folder).
"""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

import edgetam_kit as ek  # noqa: E402
from edgetam_kit.napari import settings as st  # noqa: E402
from edgetam_kit.napari import work as w  # noqa: E402
from edgetam_kit.napari.widget import KEYS, EdgeTamWidget  # noqa: E402

PLUGIN, WIDGET = "edgetam-kit", "EdgeTAM"
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("napari-model")
    ek.save_model(ek.build_random_model("tiny", seed=0, video=True), folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir) -> ek.EdgeTam:
    return ek.load_model(model_dir)


def wait_idle(qtbot, widget: EdgeTamWidget) -> None:
    """Wait until the widget's worker has finished and its last results were applied
    (``widget.worker`` is reset by the worker's ``finished`` handler on the GUI thread)."""
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    assert widget.last_error is None, widget.last_error


def run(qtbot, widget: EdgeTamWidget, worker) -> None:
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass
    wait_idle(qtbot, widget)


@pytest.fixture
def viewer_widget(qtbot, model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(st.ENV_SETTINGS, str(tmp_path / "settings.json"))
    st.save_settings(st.Settings(model=str(model_dir), cache_dir=str(tmp_path / "cache")))
    viewer = napari.Viewer(show=False)
    try:
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
        assert isinstance(widget, EdgeTamWidget)
        wait_idle(qtbot, widget)  # the remembered model loads in a worker
        yield viewer, widget
    finally:
        viewer.close()


def click(widget: EdgeTamWidget, qtbot, rc, negative: bool = False) -> None:
    """Add a prompt point at image-data (row, col[, ...]) as a click would, and wait for the mask."""
    if negative != widget.state.negative:
        widget.toggle_negative()
    widget.points_layer.add([rc])
    wait_idle(qtbot, widget)
    if widget.state.negative:
        widget.toggle_negative()


def best(r: ek.Prediction, multimask: bool) -> np.ndarray:
    return r.masks[r.best] if multimask else r.masks[0]


def test_opens_by_name_loads_samples_and_guesses_modes(viewer_widget) -> None:
    viewer, widget = viewer_widget
    assert widget.state.model is not None and widget.state.model.config.image_size == 256
    assert st.load_settings().model == widget.state.source  # remembered for the next session
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest(PLUGIN)
    assert [m.command for m in manifest.contributions.menus["napari/layers/segment"]] == ["edgetam-kit.make_widget"]
    expected = {"cells-2d": ("2D", (660, 550)), "cells-zstack": ("z-stack", (9, 256, 256)),
                "cells-timelapse": ("time-lapse", (12, 256, 256)), "rgb-video": ("RGB video", (24, 200, 112))}
    for key, (mode, spatial) in expected.items():
        layers = viewer.open_sample(PLUGIN, key)
        widget.set_image_layer(layers[0])
        assert widget.mode == mode
        assert widget.current_layer.data.shape == spatial and widget.current_layer.data.dtype == np.uint32
        assert widget.points_layer.ndim == len(spatial)
    assert widget.channel_box.count() == 4  # RGB video: RGB + channels 0, 1, 2


def test_clicks_give_the_predictors_masks_commit_and_undo(viewer_widget, qtbot, model) -> None:
    viewer, widget = viewer_widget
    (layer,) = viewer.open_sample(PLUGIN, "cells-2d")
    widget.set_image_layer(layer)
    image = layer.data
    pred = ek.ImagePredictor(model)
    pred.set_image(image)

    click(widget, qtbot, (300, 250))  # one positive point: best of 3
    mask = best(pred.predict(points=[[250, 300]], labels=[1], multimask=True), True)
    assert 0 < mask.sum() < mask.size
    np.testing.assert_array_equal(widget.current_layer.data, mask.astype(np.uint32))

    click(widget, qtbot, (100, 80), negative=True)  # + a negative point: one mask
    widget.boxes_layer.add_rectangles(np.array([[200, 150], [420, 380]]))
    wait_idle(qtbot, widget)
    r = pred.predict(points=[[250, 300], [80, 100]], labels=[1, 0], box=[150, 200, 380, 420], multimask=False)
    np.testing.assert_array_equal(widget.current_layer.data, r.masks[0].astype(np.uint32))
    assert widget.points_layer.features["prompt"].tolist() == ["positive", "negative"]

    edit = widget.commit()
    out = widget.output_layer
    np.testing.assert_array_equal(out.data, r.masks[0].astype(np.uint32))
    assert edit.pixels == int(r.masks[0].sum())
    assert len(widget.points_layer.data) == 0 and len(widget.boxes_layer.data) == 0
    assert not widget.current_layer.data.any() and widget.obj_id == 2

    click(widget, qtbot, (500, 100))  # object 2, committed over object 1 where they overlap
    m2 = best(pred.predict(points=[[100, 500]], labels=[1], multimask=True), True)
    widget.commit()
    expect = np.where(m2, 2, r.masks[0].astype(np.uint32))
    np.testing.assert_array_equal(out.data, expect)
    assert widget.undo()
    np.testing.assert_array_equal(out.data, r.masks[0].astype(np.uint32))
    assert widget.undo() and not out.data.any()
    assert not widget.undo()

    # the embedding cache: the same plane embedded again is read from disk, not encoded
    cache = widget.state.predictor.cache
    assert cache is not None and cache.misses == 1 and cache.hits == 0
    widget._forget_embedding()
    click(widget, qtbot, (300, 250))
    assert cache.hits == 1
    widget.clear_prompts()  # Shift-C: prompts and mask of the current object gone
    assert len(widget.points_layer.data) == 0 and not widget.current_layer.data.any()


def test_zstack_propagates_both_ways_and_cancel_leaves_layers_consistent(viewer_widget, qtbot, model) -> None:
    viewer, widget = viewer_widget
    (layer,) = viewer.open_sample(PLUGIN, "cells-zstack")
    widget.set_image_layer(layer)
    stack = layer.data
    viewer.dims.set_point(0, 4 * layer.scale[0])  # world z of slice 4 (z spacing 2)
    assert widget.current_prefix() == (4,)
    click(widget, qtbot, (4, 128, 100))
    assert widget.current_layer.data[4].any() and not widget.current_layer.data[3].any()

    # cancel after the first frame arrives: frames written so far are whole, the rest untouched
    applied: list[int] = []
    worker = widget.propagate("both")
    worker.yielded.connect(lambda item: isinstance(item, w.FrameResult) and (applied.append(item.frame),
                                                                                widget.cancel()))
    run(qtbot, widget, worker)
    out = widget.output_layer
    assert 1 <= len(applied) < 9 and applied[0] == 4
    assert "cancelled" in widget.status.text()
    labelled = [z for z in range(9) if out.data[z].any()]
    assert set(labelled) <= set(applied) | {4}
    assert widget.propagate_button.isEnabled() and not widget.cancel_button.isEnabled()

    # a second run gives exactly the engine's result on every slice
    run(qtbot, widget, widget.propagate("both"))
    session = ek.VideoTracker(model).start(stack)
    session.add_prompt(4, 1, points=[[100, 128]], labels=[1])
    expect = np.zeros(stack.shape, np.uint32)
    for z, ids, masks in session.propagate("both"):
        expect[z][masks[0]] = 1
    assert all(expect[z].any() for z in range(9))  # every slice labelled
    np.testing.assert_array_equal(out.data, expect)
    assert widget.undo()  # the propagation is undone as one step
    assert widget.undo()  # then the cancelled one


def test_activity_dock_cancel_stops_propagation_and_leaves_layers_consistent(viewer_widget, qtbot, model) -> None:
    """napari's own cancel of a thread worker (the activity dock / task status cancel callback is
    ``worker.quit``) stops a propagation after the frame in progress, like the Cancel button."""
    viewer, widget = viewer_widget
    (layer,) = viewer.open_sample(PLUGIN, "cells-zstack")
    widget.set_image_layer(layer)
    viewer.dims.set_point(0, 4 * layer.scale[0])
    click(widget, qtbot, (4, 128, 100))
    session = ek.VideoTracker(model).start(layer.data)
    session.add_prompt(4, 1, points=[[100, 128]], labels=[1])
    expect = {z: masks[0] for z, _ids, masks in session.propagate("both")}

    clicked = widget.current_layer.data.copy()  # committed by propagate
    applied: list[int] = []
    worker = widget.propagate("both")
    worker.yielded.connect(lambda item: isinstance(item, w.FrameResult) and (applied.append(item.frame),
                                                                                worker.quit()))
    run(qtbot, widget, worker)
    assert worker.abort_requested and not widget._cancel.is_set()  # napari's quit, not our Cancel
    out = widget.output_layer
    assert 1 <= len(applied) < 9 and applied[0] == 4
    assert "cancelled" in widget.status.text()
    assert widget.propagate_button.isEnabled() and not widget.cancel_button.isEnabled()
    for z in range(9):  # frames written are whole (the engine's masks), the others untouched
        np.testing.assert_array_equal(out.data[z], expect[z].astype(np.uint32) if z in applied or z == 4 else 0)
    assert widget.undo()  # the cancelled propagation is one undo step: the committed click stays
    np.testing.assert_array_equal(out.data, clicked)
    assert widget.undo() and not out.data.any()  # then the commit


def test_mask_write_touches_only_changed_pixels_and_an_unchanged_prompt_is_not_decoded(viewer_widget, qtbot) -> None:
    from napari.layers import Labels

    from edgetam_kit.napari.layers import write_object_mask

    rng = np.random.default_rng(0)
    data = rng.integers(0, 4, size=(2, 40, 50)).astype(np.uint32)
    before = data.copy()
    labels = Labels(data)
    old = data[1] == 2
    new = rng.random((40, 50)) < 0.3
    assert write_object_mask(labels, (1,), old, new, 2) == int((old != new).sum())
    expect = before[1].copy()
    expect[old & ~new] = 0  # object 2 leaves these pixels
    expect[new] = 2  # and covers these, over other labels
    np.testing.assert_array_equal(labels.data[1], expect)
    np.testing.assert_array_equal(labels.data[0], before[0])
    assert write_object_mask(labels, (1,), new, new, 2) == 0

    viewer, widget = viewer_widget
    (layer,) = viewer.open_sample(PLUGIN, "cells-2d")
    widget.set_image_layer(layer)
    click(widget, qtbot, (300, 250))
    calls: list[int] = []
    predict = widget.state.predictor.predict
    widget.state.predictor.predict = lambda **kw: (calls.append(1), predict(**kw))[1]
    shown = widget.current_layer.data.copy()
    widget.segment()  # the same prompt again (e.g. another object's prompt changed): no decode
    assert calls == [] and np.array_equal(widget.current_layer.data, shown)
    click(widget, qtbot, (100, 80), negative=True)  # a changed prompt is decoded
    assert calls == [1]


def test_the_press_decodes_the_click_ahead_and_the_release_shows_it(viewer_widget, qtbot, model) -> None:
    """napari adds a point on the mouse release; the widget decodes the prompt with that point on
    the press (on a scaled, translated layer), the release reuses it, and a release at another
    position is decoded for where the point landed."""
    from types import SimpleNamespace

    viewer, widget = viewer_widget
    (sample,) = viewer.open_sample(PLUGIN, "cells-2d")
    layer = viewer.add_image(sample.data, scale=(2.0, 3.0), translate=(10.0, -5.0), name="scaled cells")
    widget.set_image_layer(layer)
    pts = widget.points_layer
    assert tuple(pts.scale) == (2.0, 3.0)
    pred = ek.ImagePredictor(model)
    pred.set_image(layer.data)

    def press(rc) -> None:
        widget._on_press(pts, SimpleNamespace(modifiers=(), position=pts.data_to_world(rc)))

    press((300, 250))  # the plane is not embedded yet: nothing to decode ahead
    assert widget.state.last_click is None
    pts.add([(300, 250)])  # the release embeds the plane in a worker, then segments
    wait_idle(qtbot, widget)
    calls: list[np.ndarray] = []
    predict = widget.state.predictor.predict
    widget.state.predictor.predict = lambda **kw: (calls.append(np.array(kw["points"])), predict(**kw))[1]

    press((120, 200))  # a second point of object 1, decoded on the press
    assert len(calls) == 1 and np.allclose(calls[0][-1], [200, 120])
    pts.add(pts.world_to_data(pts.data_to_world((120, 200))))  # napari's add on the release
    wait_idle(qtbot, widget)
    assert len(calls) == 1  # shown from the press's decode
    r = pred.predict(points=[[250, 300], [200, 120]], labels=[1, 1], multimask=False)
    assert 0 < r.masks[0].sum() < r.masks[0].size
    np.testing.assert_array_equal(widget.current_layer.data, r.masks[0].astype(np.uint32))

    press((400, 400))
    pts.add([(410, 395)])  # the mouse moved between press and release
    wait_idle(qtbot, widget)
    assert len(calls) == 3 and np.allclose(calls[2][-1], [395, 410])
    r = pred.predict(points=[[250, 300], [200, 120], [395, 410]], labels=[1, 1, 1], multimask=False)
    np.testing.assert_array_equal(widget.current_layer.data, r.masks[0].astype(np.uint32))


def test_uint16_scaled_float_dask_and_rgb_channel_layers_place_labels_correctly(viewer_widget, qtbot, model) -> None:
    viewer, widget = viewer_widget
    from skimage import data

    img16 = (data.cell()[:300, :280].astype(np.uint16) * 200 + 500)
    layer = viewer.add_image(img16, name="u16 scaled", scale=(0.5, 2.0), translate=(10.0, -20.0))
    widget.set_image_layer(layer)
    assert widget.current_layer.scale.tolist() == [0.5, 2.0]
    rc = (140, 120)
    world = layer.data_to_world(rc)
    widget.points_layer.add(widget.points_layer.world_to_data(world))  # a click at that world position
    wait_idle(qtbot, widget)
    pred = ek.ImagePredictor(model)
    pred.set_image(img16)
    mask = best(pred.predict(points=[[rc[1], rc[0]]], labels=[1], multimask=True), True)
    np.testing.assert_array_equal(widget.current_layer.data, mask.astype(np.uint32))
    at_world = tuple(np.round(widget.current_layer.world_to_data(world)).astype(int))
    assert mask[rc] and widget.current_layer.data[at_world] == 1  # the label sits under the click
    np.testing.assert_allclose(widget.current_layer.data_to_world(rc), world)

    # float data outside [0, 1], served lazily by dask: the plane shown is the one segmented
    da = pytest.importorskip("dask.array")
    floats = np.stack([data.cell()[:200, :220].astype(np.float32) / 40.0 - 1.0 + 0.1 * t for t in range(4)])
    lazy = viewer.add_image(da.from_array(floats, chunks=(1, 200, 220)), name="float dask")
    widget.set_image_layer(lazy)
    viewer.dims.set_point(0, 2)
    click(widget, qtbot, (2, 90, 110))
    pred.set_image(floats[2])
    mask = best(pred.predict(points=[[110, 90]], labels=[1], multimask=True), True)
    np.testing.assert_array_equal(widget.current_layer.data[2], mask.astype(np.uint32))
    assert not widget.current_layer.data[[0, 1, 3]].any()

    (video,) = viewer.open_sample(PLUGIN, "rgb-video")
    widget.set_image_layer(video)
    widget.channel_box.setCurrentIndex(2)  # channel 1 only, as grey
    assert widget.channels == 1
    viewer.dims.set_point(0, 5)
    click(widget, qtbot, (5, 100, 60))
    pred.set_image(video.data[5], channels=1)
    mask = best(pred.predict(points=[[60, 100]], labels=[1], multimask=True), True)
    np.testing.assert_array_equal(widget.current_layer.data[5], mask.astype(np.uint32))


def test_shortcuts_are_bound_on_the_plugins_layers_without_clobbering_napari(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    from app_model.types import KeyBinding
    from napari.utils.shortcuts import default_shortcuts

    ours = {str(KeyBinding.validate(k)): name for name, k in KEYS.items()}
    clashes = {(command, str(KeyBinding.validate(b))) for command, binds in default_shortcuts.items() for b in binds
               if str(KeyBinding.validate(b)) in ours}
    # the only napari defaults on our keys belong to layer types we never bind: C = auto-contrast on
    # Image layers, T = path mode on Shapes layers (T is bound on the prompt Points layer only)
    assert clashes == {("napari:auto_contrast_once", "C"), ("napari:activate_add_path_mode", "T")}
    (layer,) = viewer.open_sample(PLUGIN, "cells-2d")
    widget.set_image_layer(layer)
    for layer_, names in ((widget.points_layer, set(KEYS)), (widget.boxes_layer, set(KEYS) - {"toggle"}),
                          (widget.current_layer, set(KEYS) - {"toggle"})):
        bound = {str(KeyBinding.validate(k)) for k in layer_.keymap}
        assert {str(KeyBinding.validate(KEYS[n])) for n in names} <= bound, layer_.name
        assert "T" not in bound or layer_ is widget.points_layer
    click(widget, qtbot, (300, 250))
    widget.next_object()  # N: object 1 stays, new id
    assert widget.obj_id == 2 and widget.current_layer.data.any()
    press = {str(KeyBinding.validate(k)): fn for k, fn in widget.points_layer.keymap.items()}
    press["T"](widget.points_layer)  # the toggle key: new points are negative
    assert widget.points_layer.feature_defaults["prompt"][0] == "negative"
    press["Shift+C"](widget.points_layer)  # clears object 2's prompts only (it has none): object 1 stays
    assert widget.current_layer.data.any()
    press["C"](widget.points_layer)  # commit object 1
    assert widget.output_layer.data.any() and not widget.current_layer.data.any()
    press["U"](widget.points_layer)
    assert not widget.output_layer.data.any()


def test_existing_labels_output_modifier_click_and_a_bad_model(viewer_widget, qtbot, model) -> None:
    viewer, widget = viewer_widget
    from types import SimpleNamespace

    (layer,) = viewer.open_sample(PLUGIN, "cells-2d")
    widget.set_image_layer(layer)
    theirs = np.zeros(layer.data.shape, np.uint32)  # e.g. Cellpose masks to refine
    theirs[:50, :50], theirs[600:, 500:] = 1, 3
    cellpose = viewer.add_labels(theirs.copy(), name="cellpose")
    widget.output_box.setCurrentText("cellpose")
    assert widget.output_layer is cellpose and widget.obj_id == 4  # the layer's ids are not reused
    assert widget.output_box.findText(widget.current_layer.name) < 0  # not offered as an output

    widget._on_press(widget.points_layer, SimpleNamespace(modifiers=("Control",)))  # Ctrl-click
    widget.points_layer.add([(300, 250)])
    wait_idle(qtbot, widget)
    assert widget.points_layer.features["prompt"].tolist() == ["negative"]
    widget._on_press(widget.points_layer, SimpleNamespace(modifiers=()))  # plain click
    widget.points_layer.add([(320, 260)])
    wait_idle(qtbot, widget)
    pred = ek.ImagePredictor(model)
    pred.set_image(layer.data)
    r = pred.predict(points=[[250, 300], [260, 320]], labels=[0, 1], multimask=False)
    widget.commit()
    np.testing.assert_array_equal(cellpose.data, np.where(r.masks[0], 4, theirs))
    assert widget.undo()
    np.testing.assert_array_equal(cellpose.data, theirs)

    widget.load_model("/nonexistent/edgetam.pt")
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    assert widget.last_error is not None and "failed" in widget.status.text()
    assert widget.state.model is model or widget.state.model is not None  # the loaded model is kept


FRESH_SESSION = """
import napari
viewer = napari.Viewer(show=False)           # napari first, as a user starts it: GL is loaded
dock, widget = viewer.window.add_plugin_dock_widget("edgetam-kit", "EdgeTAM")   # then the plugin
print("widget opened", type(widget).__name__, flush=True)
viewer.close()
"""


def test_widget_opens_in_a_fresh_napari_session(tmp_path) -> None:
    """The other tests import torch before napari (conftest); a user's session does the opposite."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, st.ENV_SETTINGS: str(tmp_path / "settings.json")}
    proc = subprocess.run([sys.executable, "-c", FRESH_SESSION], env=env, capture_output=True, text=True,
                          timeout=300)
    # A segfault here (-SIGSEGV) means the guard in edgetam_kit/__init__.py no longer keeps
    # triton's LLVM away from Mesa's libLLVM that the viewer loaded (see docs/napari.md).
    assert proc.returncode != -signal.SIGSEGV, "napari segfaulted opening the widget (triton/Mesa LLVM clash)"
    assert proc.returncode == 0 and "widget opened EdgeTamWidget" in proc.stdout, proc.stderr[-2000:]
