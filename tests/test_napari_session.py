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
