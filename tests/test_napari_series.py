"""Image series (issue 15, item 5) in a real viewer under Xvfb, driven by real clicks on the
canvas, the widget's buttons and keys: a folder of three small images annotated one after
another, each image's labels saved as the series moves on, the next image embedded ahead into
the cache, and a second viewer resuming the folder with its done list and labels.
"""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_helpers import click, key, model_dir, open_viewer, press, wait_idle  # noqa: E402,F401

from edgetam_kit.napari import project as P  # noqa: E402
from edgetam_kit.napari import series as S  # noqa: E402


def image_folder(tmp_path):
    """Three 96 x 128 grey images with a bright disc each (img10 sorts after img2)."""
    import skimage.io

    folder = tmp_path / "images"
    folder.mkdir()
    yy, xx = np.mgrid[:96, :128]
    for i, name in enumerate(("img1.png", "img2.png", "img10.png")):
        img = (40 + 10 * i + 150 * ((yy - 48) ** 2 + (xx - 40 - 20 * i) ** 2 < 20 ** 2)).astype(np.uint8)
        skimage.io.imsave(folder / name, img, check_contrast=False)
    return folder


def ticked(widget) -> list[str]:
    from qtpy.QtCore import Qt

    lst = widget.series_list
    return [lst.item(i).text() for i in range(lst.count()) if lst.item(i).checkState() == Qt.CheckState.Checked]


def test_a_folder_series_is_saved_image_by_image_and_resumed(qtbot, model_dir, tmp_path, monkeypatch) -> None:
    from qtpy.QtWidgets import QFileDialog

    folder = image_folder(tmp_path)
    project = folder / "edgetam-project"  # the default: no project folder was set
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))
    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir)
    try:
        press(qtbot, widget.series_browse)
        lst = widget.series_list
        assert [lst.item(i).text() for i in range(lst.count())] == ["img1.png", "img2.png", "img10.png"]
        first = widget.image_layer
        assert first.name == "img1.png" and widget.project_edit.text() == str(project)
        assert "1 of 3" in widget.series_label.text() and "0 of 3 done" in widget.series_label.text()
        qtbot.waitUntil(lambda: "img2.png" in widget.prefetched, timeout=120_000)  # embedded ahead

        click(viewer, qtbot, first, (48, 40))
        wait_idle(qtbot, widget)
        key(viewer, qtbot, "c")
        labels1 = widget.output_layer.data.copy()
        assert labels1.max() == 1

        press(qtbot, widget.next_image_button)
        second = widget.image_layer
        assert second.name == "img2.png" and first not in viewer.layers  # the folder's images come and go
        assert not any(ly.name.endswith("img1.png") for ly in viewer.layers)
        np.testing.assert_array_equal(P.load_image(project, "img1.png").labels, labels1)
        assert ticked(widget) == ["img1.png"]
        cache = widget.state.predictor.cache
        hits = cache.hits
        click(viewer, qtbot, second, (48, 60))
        wait_idle(qtbot, widget)
        assert cache.hits == hits + 1  # the click found img2's embedding in the cache
        assert widget.current_layer.data.any()
        key(viewer, qtbot, "n", modifier="Shift")  # next image: the pending object is committed first
        assert widget.image_layer.name == "img10.png" and "'img2.png' done" in widget.status.text()
        assert viewer.layers.selection.active is widget.points_layer
        saved2 = P.load_image(project, "img2.png")
        assert saved2 is not None and saved2.labels.max() == 1
        assert ticked(widget) == ["img1.png", "img2.png"] and "2 of 3 done" in widget.series_label.text()
    finally:
        viewer.close()

    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir, fresh=False)
    try:
        from qtpy.QtCore import Qt

        qtbot.keyClicks(widget.series_edit, str(folder))
        qtbot.keyClick(widget.series_edit, Qt.Key.Key_Return)
        assert widget.image_layer.name == "img10.png"  # where the first viewer stopped
        assert ticked(widget) == ["img1.png", "img2.png"]
        key(viewer, qtbot, "b", modifier="Shift")  # back to the previous image: img2 with its labels
        assert widget.image_layer.name == "img2.png"
        np.testing.assert_array_equal(widget.output_layer.data, saved2.labels)
        assert widget.obj_id == 2
        qtbot.keyClick(widget.series_list, Qt.Key.Key_Home)  # in the list: the first image, Enter
        qtbot.keyClick(widget.series_list, Qt.Key.Key_Return)
        assert widget.image_layer.name == "img1.png"
        np.testing.assert_array_equal(widget.output_layer.data, labels1)
        assert [ly.name for ly in viewer.layers if ly.name.startswith("img")] == ["img1.png"]
    finally:
        viewer.close()
    assert S.restore_status(project, S.ImageSeries(["img1.png", "img2.png", "img10.png"]))


def test_a_series_of_the_open_images_keeps_them_open(qtbot, model_dir, tmp_path, monkeypatch) -> None:
    from qtpy.QtCore import Qt

    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir)
    try:
        a = viewer.add_image(np.zeros((64, 64), np.uint8), name="a")
        b = viewer.add_image(np.full((64, 64), 9, np.uint8), name="b")
        press(qtbot, widget.series_layers_button)
        assert widget.image_layer is a
        assert "no project folder" in widget.status.text()
        press(qtbot, widget.next_image_button)
        assert widget.image_layer is b and a in viewer.layers and ticked(widget) == ["a"]
        qtbot.keyClick(widget.series_list, Qt.Key.Key_Space)  # tick b (the current row) by hand
        assert ticked(widget) == ["a", "b"]
        press(qtbot, widget.next_image_button)
        assert "all 2 images done" in widget.status.text()
    finally:
        viewer.close()


def test_series_status_round_trip(tmp_path) -> None:
    s = S.ImageSeries(["x.png", "y.png", "z.png"], tmp_path, done={"y.png"}, index=2)
    S.save_status(tmp_path, s)
    t = S.ImageSeries(["x.png", "y.png", "z.png", "new.png"], tmp_path)
    assert S.restore_status(tmp_path, t) and t.done == {"y.png"} and t.current == "z.png"
    assert t.next_todo() == 3 and t.upcoming(2) == ["new.png"]
    with pytest.raises(ValueError, match="names"):
        S.ImageSeries(["x.png", "x.png"])
