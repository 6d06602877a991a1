"""Use the napari widget as a person would and screenshot each step (random weights).

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/napari_session_shots.py [OUT_DIR]
    (default OUT_DIR: /tmp/napari_shots; the screen must hold the 1500 x 1100 window)

A tiny random-weight model is saved and loaded with the Folder… button (the dialog answered by
the script), a folder of three images is opened as a series, objects are clicked and committed,
the series moves on, Segment everything is reviewed, and a second viewer resumes the folder.
Mouse and key events are real Qt events on napari's canvas. Masks are meaningless (random weights).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/napari_shots")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="edgetam-shots-"))
    os.environ["EDGETAM_KIT_NAPARI_SETTINGS"] = str(work / "settings.json")
    import napari
    import skimage.io
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication, QFileDialog, QScrollArea

    import edgetam_kit as ek
    from edgetam_kit.napari._sample_data import cells_2d
    from edgetam_kit.napari.settings import Settings, save_settings

    OUT.mkdir(parents=True, exist_ok=True)
    model_dir = work / "tiny-random-model"
    ek.save_model(ek.build_random_model("tiny", seed=0, video=True), model_dir)
    images = work / "plate-07"
    images.mkdir()
    cells = cells_2d()[0][0]
    for i, name in enumerate(("well_A1.png", "well_A2.png", "well_A3.png")):
        skimage.io.imsave(images / name, np.roll(cells, 60 * i, axis=1), check_contrast=False)
    save_settings(Settings(cache_dir=str(work / "cache")))
    app = QApplication.instance() or QApplication([])
    step = [0]

    def wait(cond, limit: float = 180.0) -> None:
        end = time.time() + limit
        while not cond():
            app.processEvents()
            time.sleep(0.01)
            if time.time() > end:
                raise TimeoutError("timed out")
        for _ in range(5):
            app.processEvents()

    def shot(viewer, what: str) -> None:
        step[0] += 1
        wait(lambda: True)
        path = OUT / f"{step[0]:02d}_{what}.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(path, "|", widget.status.text())

    def canvas_click(viewer, layer, rc, modifier=Qt.KeyboardModifier.NoModifier) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from napari_helpers import canvas, world_to_canvas

        pos = world_to_canvas(viewer, layer.data_to_world(np.asarray(rc, float)))
        QTest.mousePress(canvas(viewer), Qt.MouseButton.LeftButton, modifier, pos)
        QTest.mouseRelease(canvas(viewer), Qt.MouseButton.LeftButton, modifier, pos)

    def key(viewer, k, modifier=Qt.KeyboardModifier.NoModifier) -> None:
        from napari_helpers import canvas

        QTest.keyClick(canvas(viewer), k, modifier)

    def press(button) -> None:
        assert button.isEnabled(), button.text()
        QTest.mouseClick(button, Qt.MouseButton.LeftButton)

    idle = lambda: widget.worker is None  # noqa: E731
    QFileDialog.getExistingDirectory = staticmethod(lambda *a, **k: str(model_dir))

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1100)
    _dock, widget = viewer.window.add_plugin_dock_widget("edgetam-kit", "EdgeTAM")
    shot(viewer, "start_no_model")
    press(widget.model_folder_button)
    wait(lambda: idle() and widget.state.model is not None)
    shot(viewer, "model_loaded")
    QFileDialog.getExistingDirectory = staticmethod(lambda *a, **k: str(images))
    press(widget.series_browse)
    wait(idle)
    shot(viewer, "series_opened")
    image = widget.image_layer
    canvas_click(viewer, image, (300, 250))
    wait(lambda: idle() and widget.current_layer.data.any())
    canvas_click(viewer, image, (100, 80), Qt.KeyboardModifier.ControlModifier)
    wait(idle)
    shot(viewer, "clicked_positive_and_negative")
    key(viewer, Qt.Key.Key_C)
    shot(viewer, "committed")
    press(widget.next_image_button)
    wait(idle)
    shot(viewer, "next_image")
    press(widget.auto_toggle)
    for spin, value in ((widget.pps_spin, 4), (widget.iou_spin, 0.0), (widget.stability_spin, 0.0),
                        (widget.nms_spin, 0.9)):
        spin.setValue(value)
    wait(lambda: True)
    widget.findChild(QScrollArea).ensureWidgetVisible(widget.accept_all_button)  # the review buttons in view
    press(widget.everything_button)
    wait(idle)
    shot(viewer, "review_layer")
    review = widget.state.image.layers["review"]
    ids, counts = np.unique(review.data[review.data > 0], return_counts=True)
    if len(ids):
        where = np.argwhere(review.data == ids[np.argmax(counts)])
        canvas_click(viewer, review, where[len(where) // 2])
        press(widget.accept_object_button)
        shot(viewer, "accepted_one")
    if widget.accept_all_button.isEnabled():
        press(widget.accept_all_button)
    shot(viewer, "accepted_all")
    key(viewer, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)
    wait(idle)
    shot(viewer, "third_image")
    viewer.close()

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1100)
    _dock, widget = viewer.window.add_plugin_dock_widget("edgetam-kit", "EdgeTAM")
    wait(lambda: idle() and widget.state.model is not None)
    press(widget.series_browse)
    wait(idle)
    shot(viewer, "reopened_series")
    key(viewer, Qt.Key.Key_B, Qt.KeyboardModifier.ShiftModifier)
    wait(idle)
    shot(viewer, "reopened_previous_image")
    viewer.close()


if __name__ == "__main__":
    main()
