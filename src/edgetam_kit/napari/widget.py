"""The EdgeTAM dock widget: its controls, the image / output layer choices and the plugin's layers.

What the widget does is in mixins: ``prompts.PromptHandling`` (click -> mask, on the GUI
thread from a cached embedding), ``edits.LabelEditing`` (commit, clear, next object, undo),
``tasks.LongTasks`` (model loading, propagation in napari thread workers, with progress in the
activity dock and Cancel), ``automatic.AutomaticReview`` (segment everything, then review),
``series_panel.SeriesAnnotation`` (a folder of images one after another), ``model_picker``,
``lifecycle``, ``saving`` and ``training`` (fine-tune the model on the annotations). Results are
written on the GUI thread only.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import (QComboBox, QFormLayout, QFrame, QGridLayout, QLabel, QLineEdit, QPushButton,
                            QScrollArea, QSpinBox, QVBoxLayout, QWidget)

from . import layers as L
from .automatic import AutomaticReview
from .edits import LabelEditing
from .lifecycle import KEYS, ImageLayers
from .model_picker import ModelPicker
from .prompts import PromptHandling
from .saving import ProjectSaving
from .series_panel import SeriesAnnotation
from .settings import load_settings
from .state import WidgetState
from .tasks import LongTasks
from .training import FineTuning
from .work import DIRECTIONS, MODES, STACK_MODES, guess_mode, next_free_id

NEW_OUTPUT = "new layer: edgetam objects"
__all__ = ["EdgeTamWidget", "KEYS", "NEW_OUTPUT"]


def _role(role: str) -> property:
    """A widget attribute that is the current image's plugin layer of ``role``."""

    def get(self: "EdgeTamWidget") -> Any:
        return self.state.image.layers.get(role)

    def set_(self: "EdgeTamWidget", layer: Any) -> None:
        self.state.image.layers[role] = layer

    return property(get, set_, doc=f"the current image's {role} layer (None before one is picked)")


class EdgeTamWidget(ImageLayers, ProjectSaving, SeriesAnnotation, ModelPicker, PromptHandling, LabelEditing,
                    LongTasks, AutomaticReview, FineTuning, QWidget):
    """Dock widget: model, image series, image layer, mode, prompts, Labels output, propagate,
    automatic segmentation with review, fine-tuning on the annotations."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        # napari hands plugins a PublicOnlyProxy whose attributes are new proxies on each access;
        # the widget keeps layer references and compares them by identity, so it uses the viewer
        # itself (only public API is called on it)
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.settings = load_settings()
        self.state = WidgetState()
        self.worker: Any = None
        self.last_error: BaseException | None = None
        self._cancel = threading.Event()
        self.image_layer: Any = None
        self._docked = False
        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        self.viewer.mouse_drag_callbacks.append(self._on_canvas_press)
        self._refresh_layer_choices(adopt=True)
        if self.settings.model:
            self.load_model(self.settings.model)

    points_layer = _role("points")
    boxes_layer = _role("boxes")
    current_layer = _role("current")
    output_layer = _role("output")

    def event(self, ev: QEvent) -> bool:
        """Closing the dock (napari takes the widget out of it) tears the widget down."""
        if ev.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.teardown()
                self.deleteLater()
        return super().event(ev)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        form = QFormLayout()
        form.addRow("model", self._build_model_row())
        self.cache_edit = QLineEdit(self.settings.cache_dir)
        self.cache_edit.setToolTip("embedding cache folder (empty: no cache); a reopened image is not re-encoded")
        self.cache_edit.editingFinished.connect(self._on_cache_dir)
        form.addRow("cache", self.cache_edit)
        self.project_edit = QLineEdit(self.settings.project)
        self.project_edit.setPlaceholderText("no project folder: nothing is saved")
        self.project_edit.setToolTip("project folder: every commit, undo, propagation and segment-everything "
                                     "is saved here at once; an image of the same name is resumed from it")
        self.project_edit.editingFinished.connect(self._on_project)
        form.addRow("project", self.project_edit)
        top, form = form, QFormLayout()
        self.image_box = QComboBox()
        self.image_box.currentIndexChanged.connect(lambda _i: self._on_image_choice())
        form.addRow("image", self.image_box)
        self.mode_box = QComboBox()
        self.mode_box.addItems(MODES)
        self.mode_box.currentTextChanged.connect(lambda _t: self._update_enabled())
        form.addRow("mode", self.mode_box)
        self.channel_box = QComboBox()
        self.channel_box.currentIndexChanged.connect(lambda _i: self._forget_embedding())
        form.addRow("channels", self.channel_box)
        self.output_box = QComboBox()
        self.output_box.currentIndexChanged.connect(lambda _i: self._on_output_choice())
        form.addRow("output", self.output_box)
        self.obj_spin = QSpinBox(minimum=1, maximum=2**31 - 2)
        self.obj_spin.valueChanged.connect(self._on_obj_id)
        form.addRow("object id", self.obj_spin)
        self.direction_box = QComboBox()
        self.direction_box.addItems(DIRECTIONS)
        self.direction_box.setCurrentText("both")
        form.addRow("direction", self.direction_box)

        buttons = QGridLayout()
        self.commit_button = QPushButton("Commit [C]")
        self.clear_button = QPushButton("Clear prompts [Shift-C]")
        self.next_button = QPushButton("Next object [N]")
        self.undo_button = QPushButton("Undo commit [U]")
        self.propagate_button = QPushButton("Propagate")
        self.everything_button = QPushButton("Segment everything")
        self.cancel_button = QPushButton("Cancel")
        for b, fn in ((self.commit_button, self.commit), (self.clear_button, self.clear_prompts),
                      (self.next_button, self.next_object), (self.undo_button, self.undo),
                      (self.propagate_button, lambda: self.propagate()),
                      (self.everything_button, self.segment_everything), (self.cancel_button, self.cancel)):
            b.clicked.connect(lambda _c=False, fn=fn: fn())
        for i, b in enumerate((self.commit_button, self.clear_button, self.next_button, self.undo_button,
                               self.propagate_button, self.everything_button, self.cancel_button)):
            buttons.addWidget(b, i // 2, i % 2)
        self.status = QLabel("load a model, pick an image, click on an object")
        self.status.setWordWrap(True)
        help_text = QLabel("click: positive point · Ctrl-click: negative · T: toggle positive/negative · "
                           "boxes: draw rectangles on 'edgetam boxes'")
        help_text.setWordWrap(True)
        self.polarity_label = QLabel()
        self.polarity_label.setToolTip("what a plain click adds now (T toggles; Ctrl-click adds the other kind once)")
        # the controls scroll (unfolded, they are taller than a laptop screen's dock); what a
        # click adds and the status line stay in view below them
        controls = QWidget()
        layout = QVBoxLayout(controls)
        layout.addLayout(top)
        layout.addWidget(self._build_series_ui())
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self._build_auto_ui())
        layout.addWidget(self._build_train_ui())
        layout.addWidget(help_text)
        layout.addStretch(1)
        for box in (self.model_box, self.image_box, self.output_box):  # long paths and names: not wider
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(16)
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QFrame.Shape.NoFrame)
        self._scroll.setWidget(controls)
        controls.installEventFilter(self)  # the controls' width, never scrolled sideways
        self._fit_width()
        outer = QVBoxLayout(self)
        outer.addWidget(self._scroll, 1)
        outer.addWidget(self.polarity_label)
        outer.addWidget(self.status)
        self._add_tooltips()
        self._on_obj_id(self.obj_id)
        self._update_enabled()

    def eventFilter(self, obj: Any, ev: QEvent) -> bool:
        if ev.type() == QEvent.Type.LayoutRequest and obj is self._scroll.widget():
            self._fit_width()
        return super().eventFilter(obj, ev)

    def _fit_width(self) -> None:
        """The scroll area as wide as its controls need (they scroll up and down only)."""
        need = self._scroll.widget().minimumSizeHint().width() + self._scroll.verticalScrollBar().sizeHint().width()
        if self._scroll.minimumWidth() != need:
            self._scroll.setMinimumWidth(need)

    def _add_tooltips(self) -> None:
        """A tooltip on every control."""
        tips = {
            self.image_box: "the Image layer to annotate; each image keeps its own prompts, objects and undo",
            self.mode_box: "how the leading axis is read: 2D, z-stack, time-lapse or RGB video (guessed)",
            self.channel_box: "RGB, or one channel of an RGB image shown to the model as grey",
            self.output_box: "where committed objects go: a new 'edgetam objects' layer or a Labels layer of yours",
            self.obj_spin: "the id the next prompts belong to (painted into the Labels layers)",
            self.direction_box: "propagation direction through the stack",
            self.commit_button: "write the uncommitted objects into the output layer and start a new object (C)",
            self.clear_button: "remove the current object's prompts and mask (Shift-C)",
            self.next_button: "start a new object; the objects prompted so far stay until committed (N)",
            self.undo_button: "undo the last commit, propagation or segment-everything of this image (U)",
            self.propagate_button: "commit, then track every committed object through the stack",
            self.everything_button: "automatic masks on the plane shown (or on every plane of a stack: 'every "
                                    "plane' in the settings below), into the review layer",
            self.cancel_button: "stop the running task after its current step; results so far are kept",
        }
        for control, tip in tips.items():
            control.setToolTip(tip)

    def _say(self, text: str) -> None:
        if not getattr(self, "_torn_down", False):  # a closed widget's label is gone
            self.status.setText(text)

    def _update_enabled(self) -> None:
        busy = self.worker is not None
        ready = self.state.model is not None and self.image_layer is not None
        self._model_controls_enabled(not busy)
        for b in (self.commit_button, self.clear_button, self.next_button, self.undo_button):
            b.setEnabled(ready and not busy)
        self.propagate_button.setEnabled(ready and not busy and self.mode in STACK_MODES)
        self.everything_button.setEnabled(ready and not busy)
        self.cancel_button.setEnabled(busy)
        self._review_enabled(ready)
        self._series_enabled()
        self._training_enabled(busy)

    # ------------------------------------------------------------------ choices
    @property
    def mode(self) -> str:
        return self.mode_box.currentText()

    @property
    def channels(self) -> int | None:
        """None: the image as it is (RGB or grey); k: channel k of an RGB image, as grey."""
        data = self.channel_box.currentData()
        return None if data is None else int(data)

    @property
    def obj_id(self) -> int:
        return int(self.obj_spin.value())

    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [ly for ly in self.viewer.layers if isinstance(ly, Image)]

    def _refresh_layer_choices(self, *_: Any, adopt: bool = False) -> None:
        """Refill the image and output lists (layers added, removed or renamed). adopt: pick
        first an image whose plugin layers are shown (a reopened widget continues there)."""
        from napari.layers import Labels

        images = self._image_layers()
        for image in images:
            image.events.name.connect(self._on_image_renamed)
        if self.image_layer is not None and not self._alive(self.image_layer):
            self.image_layer = None
        current = self.image_layer.name if self.image_layer is not None else self.image_box.currentText()
        if adopt and self.image_layer is None:
            shown = [L.tag_of(ly)[1] for ly in self.viewer.layers if L.tag_of(ly) and ly.visible]
            current = next((im.name for im in images if im.metadata.get(L.UID_KEY) in shown), current)
        self.image_box.blockSignals(True)
        self.image_box.clear()
        self.image_box.addItems([ly.name for ly in images])
        if current and self.image_box.findText(current) >= 0:
            self.image_box.setCurrentText(current)
        self.image_box.blockSignals(False)
        out = self.output_layer.name if self._alive(self.output_layer) else self.output_box.currentText()
        mine = {id(ly) for role, ly in self.state.image.layers.items() if role != "output"}
        self.output_box.blockSignals(True)
        self.output_box.clear()
        self.output_box.addItem(NEW_OUTPUT)
        for ly in self.viewer.layers:
            if isinstance(ly, Labels) and id(ly) not in mine and (L.tag_of(ly) or ("",))[0] not in ("current", "review"):
                self.output_box.addItem(ly.name)
        if out and self.output_box.findText(out) >= 0:
            self.output_box.setCurrentText(out)
        self.output_box.blockSignals(False)
        if self.image_layer is None and self.image_box.count():
            self._on_image_choice()
        self._update_enabled()

    def set_image_layer(self, layer: Any) -> None:
        """Work on ``layer`` (an Image layer of the viewer)."""
        if layer not in self.viewer.layers:
            raise ValueError(f"layer must be an Image layer of this viewer, got {getattr(layer, 'name', layer)!r}")
        self.image_box.setCurrentText(layer.name)
        if self.image_layer is not layer:
            self._on_image_choice()

    def _on_image_choice(self) -> None:
        name = self.image_box.currentText()
        layer = next((ly for ly in self._image_layers() if ly.name == name), None)
        if layer is None or layer is self.image_layer:
            return
        geom = L.ImageGeometry.of(layer)
        labels = tuple(getattr(layer, "axis_labels", ()))
        self.mode_box.setCurrentText(guess_mode(geom.spatial, geom.rgb, labels))
        self.channel_box.blockSignals(True)
        self.channel_box.clear()
        if geom.rgb:
            self.channel_box.addItem("RGB", None)
            for c in range(geom.data.shape[-1]):
                self.channel_box.addItem(f"channel {c}", c)
        else:
            self.channel_box.addItem("grey", None)
        self.channel_box.blockSignals(False)
        self._attach(layer)
        self._forget_embedding()
        self._update_enabled()
        note, self._resume_note = getattr(self, "_resume_note", ""), ""
        self._say(f"image '{name}': {self.mode}, planes {self.geom.hw[0]} x {self.geom.hw[1]}"
                  + (f"; {note}" if note else ""))

    def _select_output_choice(self) -> None:
        out = self.output_layer
        self.output_box.blockSignals(True)
        if self._alive(out):
            if self.output_box.findText(out.name) < 0:
                self.output_box.addItem(out.name)
            self.output_box.setCurrentText(out.name)
        else:
            self.output_box.setCurrentText(NEW_OUTPUT)
        self.output_box.blockSignals(False)

    def _on_output_choice(self) -> None:
        name = self.output_box.currentText()
        if name == NEW_OUTPUT or not name:
            if self.output_layer is not None and L.tag_of(self.output_layer) is None:
                self.output_layer = None  # a layer of the user's: the next commit makes ours
            return
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None:
            return
        if self.image_layer is not None and tuple(layer.data.shape) != self.geom.spatial:
            self._say(f"output '{name}' has shape {tuple(layer.data.shape)}; the image's planes need "
                      f"{self.geom.spatial}: pick another layer")
            self.output_box.setCurrentText(NEW_OUTPUT)
            return
        self.output_layer = layer
        if self.current_layer is not None:  # new objects must not merge into the layer's own labels
            free = next_free_id(np.asarray(layer.data), taken=list(self.state.committed))
            self.obj_spin.setValue(max(self.obj_id, free))

    def _on_obj_id(self, value: int) -> None:
        kind = L.NEGATIVE if self.state.negative else L.POSITIVE
        self.polarity_label.setText(f"a click adds: <b style='color:{L.PROMPT_COLORS[kind]}'>{kind}</b> point "
                                    f"of object {int(value)}")
        if self.points_layer is not None:
            L.set_point_defaults(self.points_layer, L.NEGATIVE if self.state.negative else L.POSITIVE, value)
        if self.boxes_layer is not None:
            self.boxes_layer.feature_defaults = {"obj_id": int(value)}
        if self.current_layer is not None:
            self.current_layer.selected_label = int(value)
