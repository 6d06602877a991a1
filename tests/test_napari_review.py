"""Automatic segmentation with review and model loading from the widget (issue 15, items 6
and 7), in a real viewer under Xvfb with real clicks and keys: masks go to a review layer, a
click picks one and Accept object adds it, Accept all the rest as one undoable step; the
settings panel folds; on a stack "every plane" segments each plane into the review layer
(progress counts planes, Cancel keeps the planes done); checkpoints are picked with file /
folder dialogs and named ones listed.
"""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_helpers import (PLUGIN, TIMEOUT_MS, click, key, model_dir, open_viewer, press,  # noqa: E402,F401
                            type_into, wait_idle)

from edgetam_kit.napari import project as P  # noqa: E402
from edgetam_kit.napari._sample_data import cells_zstack  # noqa: E402
from edgetam_kit.napari.work import planes_holding  # noqa: E402


def test_automatic_masks_are_reviewed_then_accepted_one_or_all(qtbot, model_dir, tmp_path, monkeypatch) -> None:
    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir)
    try:
        folder = tmp_path / "project"
        widget.project_edit.setText(str(folder))
        (image,) = viewer.open_sample(PLUGIN, "cells-2d")
        assert not widget.auto_settings.isVisibleTo(widget)
        press(qtbot, widget.auto_toggle)  # the settings unfold
        assert widget.auto_settings.isVisibleTo(widget)
        for spin, value in ((widget.pps_spin, "4"), (widget.iou_spin, "0"), (widget.stability_spin, "0"),
                            (widget.nms_spin, "0.9"), (widget.min_area_spin, "20")):
            type_into(qtbot, spin, value)
        assert widget.auto_options() == {"points_per_side": 4, "pred_iou_thresh": 0.0,
                                         "stability_score_thresh": 0.0, "box_nms_thresh": 0.9,
                                         "min_mask_region_area": 20}
        assert not widget.accept_all_button.isEnabled()
        assert not widget.every_plane_check.isEnabled()  # one plane
        press(qtbot, widget.everything_button)
        wait_idle(qtbot, widget)
        review = widget.state.image.layers["review"]
        assert review.name == "edgetam review · cells 2D" and review.mode == "pick"
        assert viewer.layers.selection.active is review and widget.output_layer is None  # nothing added yet
        ids, counts = np.unique(review.data[review.data > 0], return_counts=True)
        assert len(ids) >= 2, ids
        pick = int(ids[np.argmax(counts)])
        where = np.argwhere(review.data == pick)
        click(viewer, qtbot, review, where[len(where) // 2])  # picks that object
        assert review.selected_label == pick
        expect = review.data == pick
        press(qtbot, widget.accept_object_button)
        out = widget.output_layer
        np.testing.assert_array_equal(out.data == 1, expect)  # the first free id
        assert not (review.data == pick).any() and widget.obj_id == 2
        np.testing.assert_array_equal(P.load_image(folder, "cells 2D").labels, out.data)
        after_one = out.data.copy()

        press(qtbot, widget.accept_all_button)
        assert not review.data.any() and len(np.unique(out.data)) > 2
        assert viewer.layers.selection.active is widget.points_layer  # back to prompting
        assert not widget.accept_all_button.isEnabled()
        saved = P.load_image(folder, "cells 2D")
        assert {saved.objects[i]["source"] for i in saved.objects} == {"automatic"}
        key(viewer, qtbot, "u")  # Accept all was one step
        np.testing.assert_array_equal(out.data, after_one)

        press(qtbot, widget.everything_button)
        wait_idle(qtbot, widget)
        press(qtbot, widget.reject_all_button)
        assert not review.data.any()
        np.testing.assert_array_equal(out.data, after_one)
    finally:
        viewer.close()


def open_stack(qtbot, viewer, widget, planes: int) -> tuple:
    """A stack of ``planes`` slices of the z-stack sample, the settings set for many masks fast
    and "every plane" ticked (a real click on its box). Returns (image, status lines said)."""
    from qtpy.QtCore import QPoint, Qt

    image = viewer.add_image(cells_zstack()[0][0][2:2 + planes], name="stack")
    assert widget.image_layer is image and widget.everything_button.text() == "Segment everything"
    press(qtbot, widget.auto_toggle)
    for spin, value in ((widget.pps_spin, "4"), (widget.iou_spin, "0"), (widget.stability_spin, "0")):
        type_into(qtbot, spin, value)
    box = widget.every_plane_check
    assert box.isEnabled() and not box.isChecked()
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))  # on its tick box
    assert box.isChecked() and widget.everything_button.text() == "Segment every plane"
    said: list[str] = []
    say = widget._say
    widget._say = lambda text: (said.append(text), say(text))[-1]
    return image, said


def review_ids(review, prefix: tuple) -> set:
    return set(np.unique(review.data[prefix]).tolist()) - {0}


def test_every_plane_is_segmented_into_review_and_accepted_as_one_step(qtbot, model_dir, tmp_path,
                                                                       monkeypatch) -> None:
    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir)
    try:
        folder = tmp_path / "project"
        widget.project_edit.setText(str(folder))
        _image, said = open_stack(qtbot, viewer, widget, 3)
        press(qtbot, widget.everything_button)
        worker, seen = widget.worker, []
        pbar = worker.pbar
        pbar.events.value.connect(lambda e: seen.append((pbar.desc, pbar.n, pbar.total)))
        with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
            pass
        wait_idle(qtbot, widget)
        counts = [n for _d, n, t in seen if t == 3]  # the bar counts planes, 0 to 3 in order
        assert counts == sorted(counts) and set(counts) == {0, 1, 2, 3} and all("planes" in d for d, _, _ in seen), seen
        assert "segment everything: plane 2 of 3..." in " ".join(said) and "plane 3 of 3" in " ".join(said)
        review = widget.state.image.layers["review"]
        ids = [review_ids(review, (k,)) for k in range(3)]
        assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])  # unique across the stack
        assert "masks on 3 planes to review" in widget.status.text()
        from qtpy.QtWidgets import QScrollArea

        scroll = widget.findChild(QScrollArea)  # the unfolded controls scroll; the status line stays in view
        assert scroll.widget().isAncestorOf(widget.auto_settings) and not scroll.widget().isAncestorOf(widget.status)
        assert scroll.horizontalScrollBar().maximum() == 0  # never sideways
        assert widget.output_layer is None and viewer.layers.selection.active is review

        press(qtbot, widget.accept_all_button)
        out = widget.output_layer
        assert not review.data.any() and planes_holding(out.data > 0) == {(0,), (1,), (2,)}
        objs = [set(np.unique(out.data[k]).tolist()) - {0} for k in range(3)]
        assert not (objs[0] & objs[1] or objs[0] & objs[2] or objs[1] & objs[2])
        assert "on 3 planes" in widget.status.text()
        saved = P.load_image(folder, "stack")
        np.testing.assert_array_equal(saved.labels, out.data)
        assert set(saved.objects) == set().union(*objs) and {o["source"] for o in saved.objects.values()} == {"automatic"}
        key(viewer, qtbot, "u")  # one step: every plane's objects go
        assert not out.data.any() and not P.load_image(folder, "stack").labels.any()
    finally:
        viewer.close()


def test_every_plane_cancelled_mid_stack_keeps_the_planes_done(qtbot, model_dir, tmp_path, monkeypatch) -> None:
    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir)
    try:
        _image, _said = open_stack(qtbot, viewer, widget, 5)
        press(qtbot, widget.everything_button)
        review = widget.state.image.layers["review"]
        qtbot.waitUntil(lambda: review.data[0].any(), timeout=TIMEOUT_MS)  # plane 1 of 5 is in review
        press(qtbot, widget.cancel_button)
        wait_idle(qtbot, widget)
        done = planes_holding(review.data > 0)
        assert (0,) in done and (4,) not in done and done == {(k,) for k in range(len(done))}, done
        text = widget.status.text()
        assert f"cancelled after {len(done)} of 5 planes" in text and "kept in the review layer" in text, text
        assert "nothing was added" in text and widget.output_layer is None
        press(qtbot, widget.accept_all_button)
        assert planes_holding(widget.output_layer.data > 0) == done
    finally:
        viewer.close()


def test_checkpoints_are_picked_with_dialogs_and_named_ones_listed(qtbot, model_dir, tmp_path, monkeypatch) -> None:
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFileDialog

    from edgetam_kit.plugins.manager import get_plugin_manager

    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir=None)
    try:
        box = widget.model_box
        for name in get_plugin_manager().checkpoints():
            i = box.findText(name)
            assert i >= 0 and "named checkpoint" in box.itemData(i, Qt.ItemDataRole.ToolTipRole)
        monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(model_dir)))
        press(qtbot, widget.model_folder_button)
        wait_idle(qtbot, widget)
        assert widget.state.model is not None and box.currentText() == str(model_dir)
        assert "loaded" in widget.status.text()

        monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("", "")))
        press(qtbot, widget.model_file_button)  # a cancelled dialog: nothing happens
        assert widget.worker is None and box.currentText() == str(model_dir)
        junk = tmp_path / "broken.pt"
        junk.write_bytes(b"not a checkpoint")
        monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(junk), "")))
        press(qtbot, widget.model_file_button)
        qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
        text = widget.status.text()
        assert widget.last_error is not None and "broken.pt" in text and "could not be read" in text
        assert "File…" in text and "Folder…" in text and "ek.load_model" not in text
        assert widget.state.source == str(model_dir)  # the loaded model is kept
    finally:
        viewer.close()
