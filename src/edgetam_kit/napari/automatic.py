"""Automatic segmentation with a review step: its settings in a collapsible panel; its masks go
into the image's ``edgetam review`` Labels layer (in pick mode), from which the user accepts
one object (click it, then Accept object), all of them, or none. Accepted objects are added to
the output where it is background, with new ids, as one undoable step, and saved. On a stack,
"every plane" runs it plane after plane (``planes.every_plane_steps``) into the review layer.

A mixin of ``EdgeTamWidget``: it uses the widget's layers, state and controls.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QDoubleSpinBox, QFormLayout, QGridLayout, QPushButton, QSpinBox, QToolButton,
                            QVBoxLayout, QWidget)

from .state import WidgetState
from . import layers as L
from .planes import PlaneResult, PlaneRun, every_plane_steps, plane_count, plane_prefixes
from .runner import END_CANCELLED, END_DONE
from .work import Edit, next_free_id, planes_holding, write_plane

EVERYTHING, EVERY_PLANE = "Segment everything", "Segment every plane"


def _double_spin(value: float, tip: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2, value=value)
    spin.setToolTip(tip)
    return spin


class AutomaticReview:
    """Segment everything -> review layer -> accept an object / accept all / reject all."""

    state: WidgetState
    image_layer: Any
    worker: Any

    # ------------------------------------------------------------------ UI
    def _build_auto_ui(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        self.auto_toggle = QToolButton(text="automatic segmentation settings", checkable=True)
        self.auto_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.auto_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.auto_toggle.setToolTip("show or hide the settings of Segment everything")
        self.auto_settings = QWidget()
        form = QFormLayout(self.auto_settings)
        form.setContentsMargins(12, 0, 0, 0)
        self.pps_spin = QSpinBox(minimum=1, maximum=128, value=32)
        self.pps_spin.setToolTip("a grid of n x n point prompts over the plane (more: smaller objects, slower)")
        self.iou_spin = _double_spin(0.8, "keep masks whose predicted IoU is at least this")
        self.stability_spin = _double_spin(0.95, "keep masks whose stability score (mask IoU across thresholds) "
                                                 "is at least this")
        self.nms_spin = _double_spin(0.7, "of two masks whose boxes overlap more than this (IoU), keep the better "
                                          "one (1: keep both)")
        self.min_area_spin = QSpinBox(minimum=0, maximum=10**9, value=0)
        self.min_area_spin.setToolTip("remove holes and islands smaller than this many pixels (0: keep all)")
        form.addRow("points per side", self.pps_spin)
        form.addRow("IoU threshold", self.iou_spin)
        form.addRow("stability threshold", self.stability_spin)
        form.addRow("overlap threshold", self.nms_spin)
        form.addRow("minimum area", self.min_area_spin)
        self.every_plane_check = QCheckBox("every plane")
        self.every_plane_check.setToolTip("Segment everything on every plane of the stack, one after another, into "
                                          "the review layer (replacing what it held); Cancel keeps the planes done")
        self.every_plane_check.toggled.connect(lambda _on: self._update_enabled())
        form.addRow("planes", self.every_plane_check)
        self.auto_settings.setVisible(False)
        self.auto_toggle.toggled.connect(self._on_auto_toggle)
        buttons = QGridLayout()
        self.accept_object_button = QPushButton("Accept object")
        self.accept_object_button.setToolTip("add the object picked in the review layer (click it first) to the "
                                             "objects")
        self.accept_all_button = QPushButton("Accept all")
        self.accept_all_button.setToolTip("add every object left in the review layer to the objects (one undo step)")
        self.reject_all_button = QPushButton("Reject all")
        self.reject_all_button.setToolTip("empty the review layer; nothing is added")
        for i, (b, fn) in enumerate(((self.accept_object_button, self.accept_object),
                                     (self.accept_all_button, self.accept_all),
                                     (self.reject_all_button, self.reject_review))):
            b.clicked.connect(lambda _c=False, fn=fn: fn())
            buttons.addWidget(b, 0, i)
        layout.addWidget(self.auto_toggle)
        layout.addWidget(self.auto_settings)
        layout.addLayout(buttons)
        return box

    def _on_auto_toggle(self, shown: bool) -> None:
        self.auto_settings.setVisible(shown)
        self.auto_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def auto_options(self) -> dict[str, Any]:
        """The settings panel's values, as ``AutoMaskGenerator`` options."""
        return {"points_per_side": int(self.pps_spin.value()), "pred_iou_thresh": float(self.iou_spin.value()),
                "stability_score_thresh": float(self.stability_spin.value()),
                "box_nms_thresh": float(self.nms_spin.value()),
                "min_mask_region_area": int(self.min_area_spin.value())}

    def _review_enabled(self, ready: bool) -> None:
        idle = ready and self.worker is None
        pending = idle and self._review_ids().size > 0
        for b in (self.accept_object_button, self.accept_all_button, self.reject_all_button):
            b.setEnabled(pending)
        self.every_plane_check.setEnabled(idle and self._is_stack)
        self.everything_button.setText(EVERY_PLANE if self.every_plane else EVERYTHING)

    @property
    def _is_stack(self) -> bool:
        """An image is picked and it has more than one (H, W) plane."""
        return self.image_layer is not None and plane_count(self.geom.spatial) > 1

    @property
    def every_plane(self) -> bool:
        """True when Segment everything runs on every plane (ticked, and the image is a stack)."""
        return self.every_plane_check.isChecked() and self._is_stack

    # ------------------------------------------------------------------ run
    def segment_everything(self) -> Any:
        """Automatic masks on the current plane (every plane: on each plane of the stack in turn),
        into the review layer. Returns the thread worker, or None when nothing was started."""
        if self.state.model is None or self.image_layer is None:
            raise ValueError("load a model and pick an image first")
        if self._busy() or not self._ready_for_edits():
            return None
        review = self._review()
        self._task_review, self._task_image_layer = review, None  # nothing to save until accepted
        if self.every_plane:
            prefixes = plane_prefixes(self.geom.spatial)
            review.data[...] = 0  # one run's review: ids unique across the stack
            review.refresh()
            first = 1
        else:
            prefixes = [self.current_prefix()]
            data = np.asarray(review.data)  # ids after those waiting on the other planes
            first = next_free_id(*(data[p] for p in planes_holding(data > 0) if p != prefixes[0]))
        self._auto_run = PlaneRun(len(prefixes))
        gen = every_plane_steps(self.state.model, self.geom.data, prefixes, first, self.channels,
                                self._fresh_cancel(), cache=self._cache_dir(), **self.auto_options())
        worker = self._start(gen, "segment everything", self._on_auto, self._on_auto_end)
        if worker is not None and len(prefixes) > 1:
            self._say(f"segment everything: plane 1 of {len(prefixes)}...")
        return worker

    def _on_auto(self, msg: PlaneResult) -> None:
        review = self._task_review
        if not self._alive(review):
            return
        write_plane(review.data, msg.prefix, msg.labels.astype(review.data.dtype), None)
        review.refresh()
        run = self._auto_run
        first = run.masks == 0 < msg.count  # the first masks: the review layer is shown and selected
        run.done, run.masks = msg.done, run.masks + msg.count
        if first:
            review.visible = True
            review.mode = "pick"
            self.viewer.layers.selection.active = review
        if msg.done < msg.total:
            self._say(f"segment everything: plane {msg.done + 1} of {msg.total}... ({run.masks} masks "
                      f"so far on {msg.done} plane{'s' if msg.done > 1 else ''})")

    def _on_auto_end(self, outcome: str) -> None:
        """The status line once the run ended (cancelled: what the review layer holds)."""
        run = self._auto_run
        planes = run.planes
        where = f" on {run.done} plane{'s' if run.done > 1 else ''}" if planes > 1 else ""
        todo = (f"{run.masks} mask{'s' if run.masks != 1 else ''}{where} to review: click one then Accept "
                "object, or Accept all / Reject all")
        if outcome == END_CANCELLED:
            done = f" after {run.done} of {planes} planes" if planes > 1 else ""
            kept = f"; the planes done are kept in the review layer: {todo}" if run.masks else ""
            self._say(f"segment everything: cancelled{done}; nothing was added{kept}")
        elif outcome == END_DONE:
            self._say(f"segment everything: {todo}" if run.masks else
                      "segment everything: no mask passed the thresholds (lower them in the settings)")

    # ------------------------------------------------------------------ review
    def _review(self) -> Any:
        """The current image's review layer (made when missing, above its objects)."""
        self._ensure_layers()
        st = self.state.image
        if not self._alive(st.layers.get("review")):
            adopted = L.find_plugin_layers(self.viewer.layers, L.image_uid(self.image_layer)).get("review")
            if adopted is not None and tuple(adopted.data.shape) == self.geom.spatial:
                st.layers["review"] = adopted
                return adopted
            layer = self._make_layer("review")
            st.layers["review"] = layer
            layers = self.viewer.layers
            layers.move(layers.index(layer), layers.index(st.layers["current"]))
        return st.layers["review"]

    def _review_ids(self) -> np.ndarray:
        review = self.state.image.layers.get("review")
        if not self._alive(review):
            return np.zeros(0, np.uint32)
        ids = np.unique(np.asarray(review.data))
        return ids[ids > 0]

    def accept_object(self) -> int:
        """Add the object picked in the review layer to the output; returns the pixels added."""
        review = self.state.image.layers.get("review")
        picked = int(review.selected_label) if self._alive(review) else 0
        if picked not in set(self._review_ids().tolist()):
            self._say("click an object in the review layer first (it is in pick mode), then Accept object")
            return 0
        return self._accept([picked])

    def accept_all(self) -> int:
        """Add every object left in the review layer to the output; returns the pixels added."""
        ids = self._review_ids().tolist()
        if not ids:
            self._say("nothing to review: run Segment everything first")
            return 0
        return self._accept(ids)

    def reject_review(self) -> None:
        """Empty the review layer."""
        review = self.state.image.layers.get("review")
        if self._alive(review):
            review.data[...] = 0
            review.refresh()
        self._end_review()
        self._say("review emptied: nothing added")

    def _accept(self, ids: list[int]) -> int:
        if self._busy() or not self._ready_for_edits():
            return 0
        review, output = self.state.image.layers["review"], self._output()
        data = np.asarray(review.data)
        taken = np.isin(data, ids)
        before = self.state.committed_copy()
        edit = Edit("accept automatic objects")
        added: list[int] = []
        new_id = next_free_id(output.data, taken=list(self.state.committed))
        for prefix in sorted(planes_holding(taken)):
            plane, out = data[prefix], output.data[prefix]
            new = out.copy()
            for obj in np.unique(plane[taken[prefix]]):  # the objects of this plane, by id
                where = (plane == obj) & (new == 0)
                if where.any():
                    new[where] = new_id
                    added.append(new_id)
                    new_id += 1
            write_plane(output.data, prefix, new, edit)
        review.data[taken] = 0
        review.refresh()
        if edit.planes:
            self.state.push_undo(edit, before)
            self._note_objects(added, "automatic")
            output.refresh()
            self._save()
            self.obj_spin.setValue(max(self.obj_id, new_id))
        left = self._review_ids().size
        if not left:
            self._end_review()
        else:
            self._update_enabled()
        on = f" on {len(edit.planes)} planes" if len(edit.planes) > 1 else ""
        done = (f"accepted {len(added)} object{'s' if len(added) > 1 else ''}{on} ({edit.pixels} pixels)" if added
                else "accepted nothing: no background left under those objects")
        self._say(f"{done}; {left} left to review")
        return edit.pixels

    def _end_review(self) -> None:
        """Back to prompting: the prompts layer is selected again."""
        if self._alive(self.points_layer):
            self.viewer.layers.selection.active = self.points_layer
        self._update_enabled()
