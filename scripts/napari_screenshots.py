"""Screenshots of the napari plugin for docs/napari.md, made in a live viewer.

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/napari_screenshots.py [--out docs/images] [--model PATH]

(the screen must hold the 1400 x 1100 window: xvfb-run's default screen is smaller)

Without ``--model`` a random-weight tiny model is used (no weights can be downloaded here), so
the masks in the pictures show where results appear, not segmentation quality. Shots: clicks
and a box on the 2D sample, a z-stack propagated both ways, Segment everything accepted on the
2D sample, and Segment everything on every plane of the z-stack waiting for review.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "images"))
    ap.add_argument("--model", default=None, help="checkpoint to load (default: random-weight tiny model)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    os.environ["EDGETAM_KIT_NAPARI_SETTINGS"] = str(tmp / "settings.json")

    import napari
    from qtpy.QtWidgets import QApplication, QScrollArea

    import edgetam_kit as ek
    from edgetam_kit.napari.settings import Settings, save_settings

    model = args.model
    if model is None:
        model = str(tmp / "model")
        ek.save_model(ek.build_random_model("tiny", seed=0, video=True), model)
    save_settings(Settings(model=model, cache_dir=""))
    app = QApplication.instance() or QApplication([])

    viewer = napari.Viewer()
    viewer.window._qt_window.resize(1400, 1100)
    _dock, widget = viewer.window.add_plugin_dock_widget("edgetam-kit", "EdgeTAM")

    def settle() -> None:
        while widget.worker is not None:
            app.processEvents()
            time.sleep(0.02)
        for _ in range(5):
            app.processEvents()

    def shot(name: str) -> None:
        settle()
        path = out / name
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(f"wrote {path}")

    settle()
    (cells,) = viewer.open_sample("edgetam-kit", "cells-2d")
    widget.set_image_layer(cells)
    for rc in ((330, 180), (470, 330)):
        widget.points_layer.add([rc])
        settle()
        widget.commit()
    widget.points_layer.add([(200, 330)])
    settle()
    widget.toggle_negative()
    widget.points_layer.add([(160, 300)])
    settle()
    widget.toggle_negative()
    widget.boxes_layer.add_rectangles(np.array([[120, 250], [290, 420]]))
    shot("napari-click.png")

    viewer.layers.clear()
    (stack,) = viewer.open_sample("edgetam-kit", "cells-zstack")
    widget.set_image_layer(stack)
    viewer.dims.set_point(0, 4 * stack.scale[0])
    widget.points_layer.add([(4, 128, 100)])
    settle()
    widget.propagate("both")
    settle()
    viewer.dims.set_point(0, 1 * stack.scale[0])
    shot("napari-zstack.png")

    def automatic(pps: int) -> None:
        """Random weights pass no default threshold: let every mask through."""
        if not widget.auto_toggle.isChecked():
            widget.auto_toggle.click()
        for spin, value in ((widget.pps_spin, pps), (widget.iou_spin, 0.0), (widget.stability_spin, 0.0),
                            (widget.nms_spin, 0.9)):
            spin.setValue(value)
        settle()
        widget.findChild(QScrollArea).ensureWidgetVisible(widget.accept_all_button)  # the review buttons in view

    viewer.layers.clear()
    (cells,) = viewer.open_sample("edgetam-kit", "cells-2d")
    widget.set_image_layer(cells)
    automatic(8)
    widget.segment_everything()
    settle()
    widget.accept_all()  # the review step: every automatic mask accepted
    shot("napari-everything.png")

    viewer.layers.clear()
    (stack,) = viewer.open_sample("edgetam-kit", "cells-zstack")
    widget.set_image_layer(stack)
    automatic(8)
    widget.every_plane_check.click()
    widget.everything_button.click()
    settle()
    viewer.dims.set_point(0, 4 * stack.scale[0])
    shot("napari-every-plane.png")
    viewer.close()


if __name__ == "__main__":
    main()
