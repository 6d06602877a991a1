"""Use the widget's "Train on my annotations" as a person would and screenshot each step.

    xvfb-run -a python scripts/napari_finetune_shots.py [OUT_DIR]   (default /tmp/napari_finetune_shots)

A tiny random-weight model is loaded and a folder of three synthetic cell images is opened as a
series whose project folder already holds their labels (the synthetic ground truth, as if they
had been annotated earlier: the random model's own click masks cover whole images, as a first
version of this script showed); then the model is fine-tuned
for a few steps on the project's images (two of them not open: read from the series folder) and
the trained folder becomes the widget's model. A second run is cancelled mid-way.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/napari_finetune_shots")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="edgetam-ft-shots-"))
    os.environ["EDGETAM_KIT_NAPARI_SETTINGS"] = str(work / "settings.json")
    import napari
    import skimage.io
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    import edgetam_kit as ek
    from edgetam_kit.napari import project as P
    from edgetam_kit.napari.settings import Settings, save_settings
    from edgetam_kit.testing.cells import synthetic_cells

    OUT.mkdir(parents=True, exist_ok=True)
    model_dir = work / "tiny-random-model"
    ek.save_model(ek.build_random_model("tiny", seed=0, video=True), model_dir)
    images = work / "plate-07"
    images.mkdir()
    cells = synthetic_cells(3, size=256, cells=(4, 6))
    for i, (image, labels) in enumerate(zip(cells.images, cells.labels)):
        skimage.io.imsave(images / f"well_A{i + 1}.png", image, check_contrast=False)
        P.save_image(images / "edgetam-project", f"well_A{i + 1}.png", labels.astype(np.uint32),
                     int(labels.max()) + 1, {}, {})
    save_settings(Settings(model=str(model_dir), cache_dir=str(work / "cache")))
    app = QApplication.instance() or QApplication([])
    step = [0]

    def wait(cond, limit: float = 300.0) -> None:
        end = time.time() + limit
        while not cond():
            app.processEvents()
            time.sleep(0.01)
            if time.time() > end:
                raise TimeoutError("timed out")
        for _ in range(5):
            app.processEvents()

    def shot(what: str) -> None:
        step[0] += 1
        wait(lambda: True)
        path = OUT / f"{step[0]:02d}_{what}.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(path, "|", widget.status.text())

    def press(button) -> None:
        assert button.isEnabled(), button.text()
        QTest.mouseClick(button, Qt.MouseButton.LeftButton)

    idle = lambda: widget.worker is None  # noqa: E731
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1100)
    _dock, widget = viewer.window.add_plugin_dock_widget("edgetam-kit", "EdgeTAM")
    wait(lambda: idle() and widget.state.model is not None)
    press(widget.train_button)
    shot("train_with_nothing_committed")
    widget.series_edit.setText(str(images))
    QTest.keyClick(widget.series_edit, Qt.Key.Key_Return)
    wait(idle)
    widget.steps_spin.setValue(20)
    shot("before_training")
    press(widget.train_button)
    wait(lambda: "step 5 of" in widget.status.text() or idle())
    shot("training")
    wait(idle)
    shot("after_training")
    widget.train_out_edit.setText(str(work / "long-run"))
    widget.steps_spin.setValue(2000)
    press(widget.train_button)
    wait(lambda: "step 2 of" in widget.status.text() or idle())
    press(widget.cancel_button)
    wait(idle)
    shot("cancelled")
    viewer.close()


if __name__ == "__main__":
    main()
