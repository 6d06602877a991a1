"""A real napari session under Xvfb (issue 15), driven by real Qt mouse and key events on the
canvas: clicks land whatever layer napari selected, keys work on the image, the widget says what
is missing; the dock's close button tears the widget down and reopening adopts its layers;
deleted layers come back; renames are followed; each image keeps its own layers, ids and undo.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_helpers import (PLUGIN, WIDGET, best_mask, click, drag, key, model, model_dir,  # noqa: E402,F401
                            open_viewer, wait_idle)

from edgetam_kit.napari.widget import EdgeTamWidget  # noqa: E402


@pytest.fixture
def session(qtbot, model_dir, tmp_path, monkeypatch):
    viewer, dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir)
    try:
        yield viewer, dock, widget
    finally:
        viewer.close()


def names(viewer) -> list[str]:
    return [ly.name for ly in viewer.layers]


# ---------------------------------------------------------------------- 1. clicks land
def test_a_click_on_a_newly_opened_sample_adds_a_prompt_and_its_mask(session, qtbot, model) -> None:
    viewer, _dock, widget = session
    (image,) = viewer.open_sample(PLUGIN, "cells-2d")
    assert viewer.layers.selection.active is image  # napari selected the new image, not our prompts
    click(viewer, qtbot, image, (300, 250))
    wait_idle(qtbot, widget)
    pts = widget.points_layer
    assert len(pts.data) == 1 and np.allclose(pts.data[0], (300, 250), atol=1)
    prompt = widget._prompt_for(1, ())  # the point as the widget sends it (x, y), float32
    assert np.allclose(prompt.points, [[250, 300]], atol=1)
    expect = best_mask(model, image.data, prompt.points, [1])
    assert 0 < expect.sum() < expect.size
    np.testing.assert_array_equal(widget.current_layer.data, expect.astype(np.uint32))

    click(viewer, qtbot, image, (100, 80), modifier="Control")  # Ctrl-click: a negative point
    wait_idle(qtbot, widget)
    assert pts.features["prompt"].tolist() == ["positive", "negative"]
    drag(viewer, qtbot, image, (400, 400), (200, 100))  # a drag pans: no point
    wait_idle(qtbot, widget)
    assert len(pts.data) == 2
    assert viewer.layers.selection.active is image  # the user's selection is left alone


def test_keys_work_with_the_image_selected(session, qtbot) -> None:
    viewer, _dock, widget = session
    (image,) = viewer.open_sample(PLUGIN, "cells-2d")
    click(viewer, qtbot, image, (300, 250))
    wait_idle(qtbot, widget)
    assert viewer.layers.selection.active is image
    key(viewer, qtbot, "c")  # commit
    out = widget.output_layer
    assert out is not None and out.data.max() == 1 and not widget.current_layer.data.any()
    assert widget.obj_id == 2
    key(viewer, qtbot, "u")  # undo
    assert not out.data.any()
    key(viewer, qtbot, "t")  # toggle: plain clicks add negative points
    click(viewer, qtbot, image, (320, 260))
    wait_idle(qtbot, widget)
    assert widget.points_layer.features["prompt"].tolist() == ["negative"]
    key(viewer, qtbot, "c", modifier="Shift")  # clear the current object's prompts
    assert len(widget.points_layer.data) == 0
    key(viewer, qtbot, "t")  # back to positive
    click(viewer, qtbot, image, (320, 260))
    wait_idle(qtbot, widget)
    assert widget.points_layer.features["prompt"].tolist() == ["positive"]
    key(viewer, qtbot, "n")  # next object: object 2 keeps its mask
    assert widget.obj_id == 3 and "new object 3" in widget.status.text()
    assert widget.current_layer.data.max() == 2


def test_the_widget_says_what_is_missing(qtbot, tmp_path, monkeypatch) -> None:
    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir=None)  # no model
    try:
        assert widget.state.model is None
        for b in (widget.commit_button, widget.clear_button, widget.next_button, widget.undo_button,
                  widget.propagate_button, widget.everything_button):
            assert not b.isEnabled(), b.text()
        viewer.add_shapes(ndim=2, name="not an image")  # something on the canvas, but no image
        from qtpy.QtCore import QPoint, Qt

        from napari_helpers import canvas

        qtbot.mouseClick(canvas(viewer), Qt.MouseButton.LeftButton, pos=QPoint(400, 300))
        assert "no image" in widget.status.text()
        (image,) = viewer.open_sample(PLUGIN, "cells-2d")
        click(viewer, qtbot, image, (300, 250))
        assert "no model" in widget.status.text() and "not added" in widget.status.text()
        assert len(widget.points_layer.data) == 0
    finally:
        viewer.close()


# ---------------------------------------------------------------------- 2. lifecycle
def close_button(dock):
    from qtpy.QtWidgets import QPushButton

    return dock.findChild(QPushButton, "QTitleBarCloseButton")


def test_the_dock_close_button_tears_down_and_reopening_adopts_the_layers(qtbot, model_dir, tmp_path,
                                                                        monkeypatch) -> None:
    viewer, dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir)  # no fixture holds it
    try:
        (image,) = viewer.open_sample(PLUGIN, "cells-2d")
        click(viewer, qtbot, image, (300, 250))
        wait_idle(qtbot, widget)
        key(viewer, qtbot, "c")
        click(viewer, qtbot, image, (500, 100))  # object 2, not committed
        wait_idle(qtbot, widget)
        before = names(viewer)
        committed = widget.output_layer.data.copy()
        ref = weakref.ref(widget)

        from qtpy.QtCore import Qt

        qtbot.mouseClick(close_button(dock), Qt.MouseButton.LeftButton)
        del widget, dock
        for _ in range(3):
            qtbot.wait(50)
            gc.collect()
        assert ref() is None  # nothing keeps the closed widget alive
        assert names(viewer) == before  # the layers stay
        assert not viewer.mouse_drag_callbacks or all(
            getattr(cb, "__self__", None) is None or not isinstance(cb.__self__, EdgeTamWidget)
            for cb in viewer.mouse_drag_callbacks)
        pts = next(ly for ly in viewer.layers if ly.name.startswith("edgetam prompts"))
        viewer.layers.selection.active = image
        key(viewer, qtbot, "c")  # no widget: C is napari's auto-contrast on the image again, nothing commits
        assert (next(ly for ly in viewer.layers if ly.name.startswith("edgetam objects")).data == committed).all()
        assert len(pts.data) == 1

        _dock2, widget2 = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
        wait_idle(qtbot, widget2)
        assert names(viewer) == before  # adopted, not `edgetam prompts [1]`
        assert widget2.image_layer is image and widget2.points_layer is pts
        assert widget2.obj_id == 3  # ids continue after the committed 1 and the prompted 2
        np.testing.assert_array_equal(widget2.output_layer.data, committed)
        key(viewer, qtbot, "c")  # commits the adopted object 2
        assert set(np.unique(widget2.output_layer.data)) == {0, 1, 2}
        assert len(pts.data) == 0 and not widget2.current_layer.data.any()
    finally:
        viewer.close()


def test_deleted_layers_come_back_and_renames_are_followed(session, qtbot) -> None:
    viewer, _dock, widget = session
    (image,) = viewer.open_sample(PLUGIN, "cells-2d")
    click(viewer, qtbot, image, (300, 250))
    wait_idle(qtbot, widget)
    key(viewer, qtbot, "c")
    viewer.layers.remove(widget.points_layer)  # deleted by hand
    viewer.layers.remove(widget.output_layer)
    viewer.layers.selection.active = image
    click(viewer, qtbot, image, (500, 100))  # the prompts layer is made again for this click
    wait_idle(qtbot, widget)
    assert len(widget.points_layer.data) == 1 and widget.points_layer in viewer.layers
    assert widget.current_layer.data.max() == 2
    key(viewer, qtbot, "c")  # the objects layer is made again for this commit
    assert widget.output_layer in viewer.layers and widget.output_layer.data.max() == 2
    assert sorted(n for n in names(viewer) if n.startswith("edgetam")) == sorted(
        f"{r} · cells 2D" for r in ("edgetam prompts", "edgetam boxes", "edgetam current", "edgetam objects"))

    viewer.layers.remove(widget.current_layer)
    key(viewer, qtbot, "n")  # next object: not silently ignored
    assert widget.obj_id == 3 and widget.current_layer in viewer.layers

    image.name = "nuclei"
    assert widget.image_box.currentText() == "nuclei" and widget.image_box.count() == 1
    assert sorted(n for n in names(viewer) if n.startswith("edgetam")) == sorted(
        f"{r} · nuclei" for r in ("edgetam prompts", "edgetam boxes", "edgetam current", "edgetam objects"))
    click(viewer, qtbot, image, (100, 400))
    wait_idle(qtbot, widget)
    assert widget.current_layer.data.max() == 3


# ---------------------------------------------------------------------- 3. per-image state
def plugin_layers(viewer, image) -> dict:
    from edgetam_kit.napari.layers import find_plugin_layers, image_uid

    return find_plugin_layers(viewer.layers, image_uid(image))


def test_each_image_keeps_its_layers_ids_and_undo(session, qtbot) -> None:
    viewer, _dock, widget = session
    (a,) = viewer.open_sample(PLUGIN, "cells-2d")
    click(viewer, qtbot, a, (300, 250))
    wait_idle(qtbot, widget)
    key(viewer, qtbot, "c")
    out_a = widget.output_layer
    before_a = out_a.data.copy()
    assert set(np.unique(before_a)) == {0, 1}

    b = viewer.add_image(a.data[::-1].copy(), name="flipped")  # napari selects it
    click(viewer, qtbot, b, (300, 250))  # a click on the selected image: the widget moves to it
    wait_idle(qtbot, widget)
    assert widget.image_layer is b and len(widget.points_layer.data) == 1
    assert all(not ly.visible for ly in plugin_layers(viewer, a).values())  # A's layers hidden with A
    assert all(ly.visible and ly.name.endswith("· flipped") for ly in plugin_layers(viewer, b).values())
    key(viewer, qtbot, "c")
    out_b = widget.output_layer
    assert out_b is not out_a and out_b.name == "edgetam objects · flipped"
    assert set(np.unique(out_b.data)) == {0, 1}  # B's own ids start at 1
    np.testing.assert_array_equal(out_a.data, before_a)

    viewer.layers.selection.active = a
    click(viewer, qtbot, a, (500, 100))  # back on A: ids continue from A's highest
    wait_idle(qtbot, widget)
    assert widget.image_layer is a and widget.obj_id == 2
    assert not any(ly.visible for ly in plugin_layers(viewer, b).values())
    key(viewer, qtbot, "c")
    assert widget.output_layer is out_a and set(np.unique(out_a.data)) == {0, 1, 2}
    assert not any("[1]" in n for n in names(viewer))
    key(viewer, qtbot, "u")  # A's history: its second commit, then its first
    np.testing.assert_array_equal(out_a.data, before_a)
    key(viewer, qtbot, "u")
    assert not out_a.data.any()
    key(viewer, qtbot, "u")
    assert "nothing to undo" in widget.status.text()
    assert set(np.unique(out_b.data)) == {0, 1}  # B untouched by A's undo

    widget.image_box.setCurrentText("flipped")
    assert widget.image_layer is b and widget.obj_id == 2
    key(viewer, qtbot, "u")  # B's history was kept
    assert not out_b.data.any()


# ---------------------------------------------------------------------- 4. save and resume
def set_project(qtbot, widget, folder) -> None:
    """Type the project folder into the widget and press Enter."""
    from qtpy.QtCore import Qt

    widget.project_edit.clear()
    qtbot.keyClicks(widget.project_edit, str(folder))
    qtbot.keyClick(widget.project_edit, Qt.Key.Key_Return)


def test_every_commit_is_saved_and_a_new_viewer_resumes(qtbot, model_dir, tmp_path, monkeypatch) -> None:
    from edgetam_kit.napari import project as P

    folder = tmp_path / "project"
    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir)
    try:
        set_project(qtbot, widget, folder)
        (image,) = viewer.open_sample(PLUGIN, "cells-2d")
        click(viewer, qtbot, image, (300, 250))
        wait_idle(qtbot, widget)
        key(viewer, qtbot, "c")
        saved = P.load_image(folder, "cells 2D")  # written by the commit itself
        np.testing.assert_array_equal(saved.labels, widget.output_layer.data)
        assert saved.next_id == 2 and saved.objects[1]["source"] == "click"
        assert 0 <= saved.objects[1]["predicted_iou"] <= 1
        click(viewer, qtbot, image, (500, 100))
        click(viewer, qtbot, image, (520, 120))
        wait_idle(qtbot, widget)
        key(viewer, qtbot, "c")
        labels = widget.output_layer.data.copy()
        prompts = {o: dict(p) for o, p in widget.state.committed.items()}
        assert set(np.unique(labels)) == {0, 1, 2} and len(prompts[2][()].points) == 2
    finally:
        viewer.close()

    # a second viewer: the same image is resumed (labels, next id, prompts), and work continues
    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir, fresh=False)  # folder remembered
    try:
        assert widget.project_edit.text() == str(folder)
        (image,) = viewer.open_sample(PLUGIN, "cells-2d")
        np.testing.assert_array_equal(widget.output_layer.data, labels)
        assert widget.obj_id == 3 and "resumed" in widget.status.text()
        assert set(widget.state.committed) == {1, 2}
        for o, per in prompts.items():
            for plane, p in per.items():
                assert widget.state.committed[o][plane].same_as(p)
        click(viewer, qtbot, image, (100, 400))
        wait_idle(qtbot, widget)
        key(viewer, qtbot, "c")
        assert set(np.unique(P.load_image(folder, "cells 2D").labels)) == {0, 1, 2, 3}
        key(viewer, qtbot, "u")  # undo is saved too
        np.testing.assert_array_equal(P.load_image(folder, "cells 2D").labels, labels)
    finally:
        viewer.close()
    assert not list(folder.glob(".*.tmp"))  # no temporary files left
