"""Helpers for viewer tests: the widget in a real viewer, and real Qt mouse and key events sent
to napari's canvas (they go through vispy and napari's own event handling, as a user's do)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import edgetam_kit as ek
from edgetam_kit.napari import settings as st

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


def wait_idle(qtbot, widget: Any) -> None:
    """Wait until the widget's worker finished and its last results were applied."""
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    assert widget.last_error is None, widget.last_error


def open_viewer(qtbot, tmp_path, monkeypatch, model_dir: Any = None, fresh: bool = True) -> tuple[Any, Any, Any]:
    """A hidden viewer with the widget docked; ``model_dir`` (remembered in the settings) is
    loaded when the widget opens. fresh=False: the settings an earlier viewer left are kept.
    Returns (viewer, dock, widget)."""
    import napari

    monkeypatch.setenv(st.ENV_SETTINGS, str(tmp_path / "settings.json"))
    if fresh:
        st.save_settings(st.Settings(model=str(model_dir or ""), cache_dir=str(tmp_path / "cache")))
    viewer = napari.Viewer(show=False)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    wait_idle(qtbot, widget)
    return viewer, dock, widget


def press(qtbot, button: Any) -> None:
    """A real left click on an enabled button of the widget."""
    from qtpy.QtCore import Qt

    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def type_into(qtbot, spin: Any, text: str) -> None:
    """Select a spin box's text, type ``text`` and press Enter (as a user sets a value)."""
    from qtpy.QtCore import Qt

    qtbot.keyClick(spin, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(spin, text)
    qtbot.keyClick(spin, Qt.Key.Key_Return)


def canvas(viewer: Any) -> Any:
    """The Qt widget of napari's canvas."""
    return viewer.window._qt_viewer.canvas.native


def world_to_canvas(viewer: Any, world: Any) -> Any:
    """Canvas pixel (QPoint) of a world position (the view's transform, inverted as napari
    maps clicks)."""
    from qtpy.QtCore import QPoint

    c = viewer.window._qt_viewer.canvas
    transform = c.view.transform * c.view.scene.transform
    scene = [float(world[d]) for d in viewer.dims.displayed][::-1]
    x, y = transform.map(scene)[:2]
    return QPoint(int(round(x)), int(round(y)))


def _modifier(name: str | None) -> Any:
    from qtpy.QtCore import Qt

    return {None: Qt.KeyboardModifier.NoModifier, "Control": Qt.KeyboardModifier.ControlModifier,
            "Shift": Qt.KeyboardModifier.ShiftModifier, "Alt": Qt.KeyboardModifier.AltModifier}[name]


def click(viewer: Any, qtbot, layer: Any, rc: Any, modifier: str | None = None) -> None:
    """A left click on the canvas where ``layer``'s data coordinate ``rc`` is shown."""
    from qtpy.QtCore import Qt

    pos = world_to_canvas(viewer, layer.data_to_world(np.asarray(rc, float)))
    qtbot.mousePress(canvas(viewer), Qt.MouseButton.LeftButton, _modifier(modifier), pos)
    qtbot.mouseRelease(canvas(viewer), Qt.MouseButton.LeftButton, _modifier(modifier), pos)


def drag(viewer: Any, qtbot, layer: Any, rc0: Any, rc1: Any, steps: int = 5) -> None:
    """A left-button drag on the canvas from ``rc0`` to ``rc1`` (``layer``'s data coordinates)."""
    from qtpy.QtCore import QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    native = canvas(viewer)
    p0 = world_to_canvas(viewer, layer.data_to_world(np.asarray(rc0, float)))
    p1 = world_to_canvas(viewer, layer.data_to_world(np.asarray(rc1, float)))
    qtbot.mousePress(native, Qt.MouseButton.LeftButton, _modifier(None), p0)
    for k in range(1, steps + 1):
        p = QPointF(p0) + (QPointF(p1) - QPointF(p0)) * (k / steps)
        ev = QMouseEvent(QMouseEvent.Type.MouseMove, p, native.mapToGlobal(p), Qt.MouseButton.NoButton,
                         Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(native, ev)
    qtbot.mouseRelease(native, Qt.MouseButton.LeftButton, _modifier(None), p1)


def key(viewer: Any, qtbot, name: str, modifier: str | None = None) -> None:
    """A key press and release on the canvas (``name``: a letter)."""
    from qtpy.QtCore import Qt

    qtbot.keyClick(canvas(viewer), getattr(Qt.Key, f"Key_{name.upper()}"), _modifier(modifier))


def best_mask(model: Any, image: np.ndarray, points_xy: list, labels: list) -> np.ndarray:
    """The engine's mask for a prompt as the widget asks for it (one point: best of 3, only that one upsampled)."""
    pred = ek.ImagePredictor(model)
    pred.set_image(image)
    multi = len(points_xy) == 1
    r = pred.predict(points=np.asarray(points_xy, np.float32), labels=labels, multimask=multi, best_only=True)
    return r.masks[0]
