"""The smaller defects of issue 15 (item 6), in a real viewer under Xvfb with real Qt mouse and
key events: the progress label while frames are counted, a 0-pixel "Segment everything" takes no
undo step, the face-colour swatch follows the polarity, a click in the 3D view is refused aloud,
the objects layer sits below the prompts and the preview, an offline model error in the widget's
terms, a tooltip on every control. (Buttons disabled until a model and an image exist:
test_napari_session.py::test_the_widget_says_what_is_missing.)
"""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_helpers import (PLUGIN, TIMEOUT_MS, canvas, click, key, model_dir,  # noqa: E402,F401
                            open_viewer, press, type_into, wait_idle)

from edgetam_kit.napari import work as w  # noqa: E402


@pytest.fixture
def session(qtbot, model_dir, tmp_path, monkeypatch):
    viewer, dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir)
    try:
        yield viewer, dock, widget
    finally:
        viewer.close()


def test_progress_says_frames_while_it_counts_frames(session, qtbot) -> None:
    viewer, _dock, widget = session
    (stack,) = viewer.open_sample(PLUGIN, "cells-zstack")
    viewer.dims.set_point(0, 4 * stack.scale[0])
    click(viewer, qtbot, stack, (4, 128, 100))
    wait_idle(qtbot, widget)
    seen: list[tuple[str, int, int]] = []  # (label, value, total) each time the bar moves

    widget.direction_box.setCurrentText("forward")
    press(qtbot, widget.propagate_button)
    worker = widget.worker
    pbar = worker.pbar
    pbar.events.value.connect(lambda e: seen.append((pbar.desc, pbar.n, pbar.total)))
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass
    wait_idle(qtbot, widget)
    frames = [s for s in seen if s[2] == 5]  # slices 4..8 forward
    assert [n for _d, n, _t in frames] == [1, 2, 3, 4, 5]
    assert all("frames" in d and "prompts" not in d for d, _n, _t in frames), seen


def test_segment_everything_that_changes_nothing_takes_no_undo_step(session, qtbot) -> None:
    viewer, _dock, widget = session
    (image,) = viewer.open_sample(PLUGIN, "cells-2d")
    full = viewer.add_labels(np.full(image.data.shape, 7, np.uint32), name="full")  # no background left
    widget.output_box.setCurrentText("full")
    viewer.layers.selection.active = image
    click(viewer, qtbot, image, (300, 250))
    wait_idle(qtbot, widget)
    key(viewer, qtbot, "c")  # object 8 over the 7s: one undo step
    painted = full.data.copy()
    assert (painted == 8).any()
    for spin, value in ((widget.pps_spin, "4"), (widget.iou_spin, "0"), (widget.stability_spin, "0")):
        type_into(qtbot, spin, value)
    press(qtbot, widget.everything_button)
    wait_idle(qtbot, widget)
    assert widget.state.image.layers["review"].data.any()  # masks to review...
    press(qtbot, widget.accept_all_button)
    np.testing.assert_array_equal(full.data, painted)  # ...but nowhere to add them
    assert "nothing" in widget.status.text()
    key(viewer, qtbot, "u")  # undoes the commit, not an empty step
    assert (full.data == 7).all()


def test_the_face_colour_swatch_follows_the_polarity(session, qtbot) -> None:
    viewer, _dock, widget = session
    (image,) = viewer.open_sample(PLUGIN, "cells-2d")
    pts = widget.points_layer
    viewer.layers.selection.active = pts
    swatch = viewer.window._qt_viewer.controls.widgets[pts]._face_color_control.face_color_edit
    click(viewer, qtbot, image, (300, 250))  # napari's own add on the prompts layer
    wait_idle(qtbot, widget)
    lime, red = [0, 1, 0, 1], [1, 0, 0, 1]
    key(viewer, qtbot, "t")
    assert np.allclose(swatch.color, red) and "negative" in widget.status.text()
    assert "negative" in widget.polarity_label.text()  # always visible in the widget
    key(viewer, qtbot, "t")
    assert np.allclose(swatch.color, lime) and "positive" in widget.status.text()
    assert "positive" in widget.polarity_label.text()
    click(viewer, qtbot, image, (100, 80), modifier="Control")
    wait_idle(qtbot, widget)
    click(viewer, qtbot, image, (320, 260))  # a Ctrl-click is negative once; plain clicks stay positive
    wait_idle(qtbot, widget)
    assert np.allclose(swatch.color, lime)
    assert pts.features["prompt"].tolist() == ["positive", "negative", "positive"]
    assert np.allclose(pts.face_color, [lime, red, lime])  # no point recoloured by the swatch


def test_a_click_in_the_3d_view_is_refused_aloud(session, qtbot) -> None:
    from qtpy.QtCore import QPoint, Qt

    viewer, _dock, widget = session
    (stack,) = viewer.open_sample(PLUGIN, "cells-zstack")
    viewer.layers.selection.active = widget.points_layer
    viewer.dims.ndisplay = 3
    qtbot.mouseClick(canvas(viewer), Qt.MouseButton.LeftButton, pos=QPoint(400, 300))
    wait_idle(qtbot, widget)
    assert len(widget.points_layer.data) == 0
    assert "3D" in widget.status.text() and "ignored" in widget.status.text()
    viewer.dims.ndisplay = 2
    assert widget.points_layer.mode == "add"
    click(viewer, qtbot, stack, (4, 128, 100))
    wait_idle(qtbot, widget)
    assert len(widget.points_layer.data) == 1


def test_the_objects_layer_is_below_the_prompts_and_the_preview(session, qtbot) -> None:
    viewer, _dock, widget = session
    (image,) = viewer.open_sample(PLUGIN, "cells-2d")
    click(viewer, qtbot, image, (300, 250))
    wait_idle(qtbot, widget)
    key(viewer, qtbot, "c")
    order = list(viewer.layers)
    assert (order.index(image) < order.index(widget.output_layer) < order.index(widget.current_layer)
            < order.index(widget.points_layer))


def test_an_offline_model_error_is_in_the_widgets_terms(session, qtbot) -> None:
    _viewer, _dock, widget = session
    edit = widget.model_box.lineEdit()
    edit.selectAll()
    qtbot.keyClicks(edit, "someone/edgetam-not-cached")
    press(qtbot, widget.load_button)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    text = widget.status.text()
    assert widget.last_error is not None and "someone/edgetam-not-cached" in text
    assert "ek.load_model" not in text and "--checkpoint" not in text
    assert "model box" in text and "Load" in text and "File…" in text
    assert widget.state.model is not None  # the loaded model is kept


def test_every_control_has_a_tooltip(session) -> None:
    from qtpy.QtWidgets import (QAbstractSpinBox, QComboBox, QLineEdit, QListWidget, QPushButton, QToolButton)

    _viewer, _dock, widget = session
    kinds = (QPushButton, QToolButton, QComboBox, QAbstractSpinBox, QLineEdit, QListWidget)
    controls = [c for t in kinds for c in widget.findChildren(t)
                if not isinstance(c.parent(), (QComboBox, QAbstractSpinBox))]  # a combo's own line edit
    assert len(controls) >= 30
    missing = [c.text() if hasattr(c, "text") else c.objectName() or type(c).__name__
               for c in controls if not c.toolTip()]
    assert not missing, missing


KILLED_SESSION = r"""
import faulthandler, os, signal, sys, time
faulthandler.enable()
sys.path.insert(0, sys.argv[1])
import napari
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

viewer = napari.Viewer(show=False)  # napari first, as a user starts it
dock, widget = viewer.window.add_plugin_dock_widget("edgetam-kit", "EdgeTAM")
from napari_helpers import canvas, world_to_canvas
app = QApplication.instance()

def wait(cond, limit=120.0):
    end = time.time() + limit
    while not cond():
        app.processEvents()
        time.sleep(0.01)
        assert time.time() < end, "timed out"

wait(lambda: widget.worker is None and widget.state.model is not None)
(image,) = viewer.open_sample("edgetam-kit", "cells-2d")
pos = world_to_canvas(viewer, image.data_to_world((300, 250)))
QTest.mousePress(canvas(viewer), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos)
QTest.mouseRelease(canvas(viewer), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos)
wait(lambda: widget.worker is None and widget.current_layer.data.any())
QTest.keyClick(canvas(viewer), Qt.Key.Key_C)
out = widget.output_layer.data
print("committed", int(out.max()), int((out > 0).sum()), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # right after the commit: no close, no atexit
"""


def test_a_viewer_killed_right_after_a_commit_loses_nothing(model_dir, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from edgetam_kit.napari import project as P
    from edgetam_kit.napari import settings as st

    folder = tmp_path / "project"
    settings = tmp_path / "settings.json"
    env = {**os.environ, st.ENV_SETTINGS: str(settings)}
    os.environ[st.ENV_SETTINGS], old = str(settings), os.environ.get(st.ENV_SETTINGS)
    try:
        st.save_settings(st.Settings(model=str(model_dir), cache_dir="", project=str(folder)))
    finally:
        os.environ.pop(st.ENV_SETTINGS) if old is None else os.environ.__setitem__(st.ENV_SETTINGS, old)
    proc = subprocess.run([sys.executable, "-c", KILLED_SESSION, str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    _word, top, pixels = proc.stdout.split()[-3:]
    saved = P.load_image(folder, "cells 2D")
    assert saved is not None and int(top) == 1 and int(pixels) > 0
    assert int(saved.labels.max()) == 1 and int((saved.labels > 0).sum()) == int(pixels)
    assert saved.next_id == 2 and set(saved.prompts) == {1} and saved.objects[1]["source"] == "click"
    assert not list(folder.glob(".*.tmp"))
