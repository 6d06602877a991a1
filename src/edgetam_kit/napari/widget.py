"""The EdgeTAM dock widget: wires the generators of ``work`` to napari layers and thread workers.

Click-to-mask runs on the GUI thread against a cached embedding; embedding, propagation,
automatic masks and model loading run in napari thread workers (progress in the activity dock,
Cancel button). Results are written on the GUI thread only, one frame at a time, each write
recorded so that Undo restores it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qtpy.QtWidgets import (QComboBox, QFormLayout, QGridLayout, QLabel, QLineEdit, QPushButton, QSpinBox,
                            QVBoxLayout, QWidget)

from . import layers as L
from .runner import END_CANCELLED, END_DONE, END_FAILED, start_task
from .settings import load_settings, save_settings
from .work import (DIRECTIONS, MODES, STACK_MODES, AutoResult, Edit, Embedded, FrameResult, ModelLoaded,
                   ObjectPrompt, automask_steps, click_mask, embed_steps, guess_mode, load_model_steps,
                   make_prompt, next_free_id, paint_objects, track_steps, undo_edit, write_plane)

NEW_OUTPUT = "new layer: edgetam objects"
NAMES = {"points": "edgetam prompts", "boxes": "edgetam boxes", "current": "edgetam current",
         "output": "edgetam objects"}
# keys bound on the plugin's own layers only; none of them is a napari default for those layer types
KEYS = {"commit": "c", "clear": "Shift-C", "next": "n", "undo": "u", "toggle": "t"}
MAX_UNDO = 20


@dataclass
class _Undo:
    edit: Edit
    committed: dict[int, dict[tuple, ObjectPrompt]]  # prompt records before the change


@dataclass
class _State:
    model: Any = None
    source: str = ""
    predictor: Any = None
    embedded: tuple | None = None  # key of the plane held by the predictor
    pending_click: bool = False
    negative: bool = False  # toggle: new points are negative
    touched: set = field(default_factory=set)  # planes of the current layer holding masks
    committed: dict[int, dict[tuple, ObjectPrompt]] = field(default_factory=dict)  # obj -> plane -> prompt
    undo: list[_Undo] = field(default_factory=list)


class EdgeTamWidget(QWidget):
    """Dock widget: model, image layer, mode, prompts, Labels output, propagate, segment everything."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        # napari hands plugins a PublicOnlyProxy whose attributes are new proxies on each access;
        # the widget keeps layer references and compares them by identity, so it uses the viewer
        # itself (only public API is called on it)
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.settings = load_settings()
        self.state = _State()
        self.worker: Any = None
        self.last_error: BaseException | None = None
        self._cancel = threading.Event()
        self.image_layer: Any = None
        self.points_layer: Any = None
        self.boxes_layer: Any = None
        self.current_layer: Any = None
        self.output_layer: Any = None
        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self._refresh_layer_choices()
        if self.settings.model:
            self.load_model(self.settings.model)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        form = QFormLayout()
        self.model_box = QComboBox(editable=True)
        self.model_box.setToolTip("a registered checkpoint name, a local path (folder or edgetam.pt) or a hub id")
        from ..plugins import get_plugin_manager

        names = list(get_plugin_manager().checkpoints())
        for item in [self.settings.model, *self.settings.recent, *names]:
            if item and self.model_box.findText(item) < 0:
                self.model_box.addItem(item)
        self.model_box.setCurrentText(self.settings.model or (names[0] if names else ""))
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(lambda: self.load_model(self.model_box.currentText()))
        row = QWidget()
        grid = QGridLayout(row)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.model_box, 0, 0)
        grid.addWidget(self.load_button, 0, 1)
        form.addRow("model", row)
        self.cache_edit = QLineEdit(self.settings.cache_dir)
        self.cache_edit.setToolTip("embedding cache folder (empty: no cache); a reopened image is not re-encoded")
        self.cache_edit.editingFinished.connect(self._on_cache_dir)
        form.addRow("cache", self.cache_edit)
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
        self.pps_spin = QSpinBox(minimum=1, maximum=128, value=32)
        self.pps_spin.setToolTip("segment everything: grid of n x n point prompts")
        form.addRow("points per side", self.pps_spin)

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
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(help_text)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._update_enabled()

    def _say(self, text: str) -> None:
        self.status.setText(text)

    def _update_enabled(self) -> None:
        busy = self.worker is not None
        ready = self.state.model is not None and self.image_layer is not None
        self.load_button.setEnabled(not busy)
        for b in (self.commit_button, self.clear_button, self.next_button, self.undo_button):
            b.setEnabled(not busy)
        self.propagate_button.setEnabled(ready and not busy and self.mode in STACK_MODES)
        self.everything_button.setEnabled(ready and not busy)
        self.cancel_button.setEnabled(busy)

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

    def _refresh_layer_choices(self, *_: Any) -> None:
        from napari.layers import Labels

        current = self.image_box.currentText()
        self.image_box.blockSignals(True)
        self.image_box.clear()
        self.image_box.addItems([ly.name for ly in self._image_layers()])
        if current and self.image_box.findText(current) >= 0:
            self.image_box.setCurrentText(current)
        self.image_box.blockSignals(False)
        out = self.output_box.currentText()
        self.output_box.blockSignals(True)
        self.output_box.clear()
        self.output_box.addItem(NEW_OUTPUT)
        for ly in self.viewer.layers:
            if isinstance(ly, Labels) and ly is not self.current_layer:
                self.output_box.addItem(ly.name)
        if out and self.output_box.findText(out) >= 0:
            self.output_box.setCurrentText(out)
        elif self.output_layer is not None and self.output_layer in self.viewer.layers:
            self.output_box.setCurrentText(self.output_layer.name)
        self.output_box.blockSignals(False)
        if self.image_layer is not None and self.image_layer not in self.viewer.layers:
            self.image_layer = None
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
        self.image_layer = layer
        self.geom = L.ImageGeometry.of(layer)
        labels = tuple(getattr(layer, "axis_labels", ()))
        self.mode_box.setCurrentText(guess_mode(self.geom.spatial, self.geom.rgb, labels))
        self.channel_box.blockSignals(True)
        self.channel_box.clear()
        if self.geom.rgb:
            self.channel_box.addItem("RGB", None)
            for c in range(self.geom.data.shape[-1]):
                self.channel_box.addItem(f"channel {c}", c)
        else:
            self.channel_box.addItem("grey", None)
        self.channel_box.blockSignals(False)
        self._make_layers()
        self._forget_embedding()
        self._update_enabled()
        self._say(f"image '{name}': {self.mode}, planes {self.geom.hw[0]} x {self.geom.hw[1]}")

    def _make_layers(self) -> None:
        """(Re)create the prompt and current-object layers over the image; keep the output when it fits."""
        geom, image, viewer = self.geom, self.image_layer, self.viewer
        ndim = len(geom.spatial)
        for attr in ("points_layer", "boxes_layer", "current_layer"):
            old = getattr(self, attr)
            if old is not None and old in viewer.layers:
                viewer.layers.remove(old)
        self.current_layer = L.make_labels_layer(viewer, image, geom.spatial, NAMES["current"], 0.6)
        self.boxes_layer = L.make_shapes_layer(viewer, image, ndim, NAMES["boxes"])
        self.boxes_layer.features = {"obj_id": np.zeros(0, int)}
        self.boxes_layer.feature_defaults = {"obj_id": self.obj_id}
        self.points_layer = L.make_points_layer(viewer, image, ndim, NAMES["points"])
        self.points_layer.mode = "add"
        self.points_layer.events.data.connect(self._on_prompts_changed)
        self.boxes_layer.events.data.connect(self._on_prompts_changed)
        self.points_layer.mouse_drag_callbacks.insert(0, self._on_press)
        for layer in (self.points_layer, self.boxes_layer, self.current_layer):
            self._bind_keys(layer)
        self.state.touched.clear()
        self.state.committed.clear()
        self.state.undo.clear()
        if self.output_layer is None or tuple(self.output_layer.data.shape) != geom.spatial:
            self.output_layer = None
            self.output_box.setCurrentText(NEW_OUTPUT)
        out = None if self.output_layer is None else np.asarray(self.output_layer.data)
        self.obj_spin.setValue(next_free_id(out))
        self._on_obj_id(self.obj_id)
        viewer.layers.selection.active = self.points_layer

    def _bind_keys(self, layer: Any) -> None:
        actions = {"commit": self.commit, "clear": self.clear_prompts, "next": self.next_object, "undo": self.undo}
        if layer is self.points_layer:
            actions["toggle"] = self.toggle_negative
        for name, fn in actions.items():
            layer.bind_key(KEYS[name], lambda _layer, fn=fn: fn(), overwrite=True)

    def _on_output_choice(self) -> None:
        name = self.output_box.currentText()
        if name == NEW_OUTPUT or not name:
            if self.output_layer is not None and self.output_layer.name != NAMES["output"]:
                self.output_layer = None
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

    def _output(self) -> Any:
        if self.output_layer is None or self.output_layer not in self.viewer.layers:
            self.output_layer = L.make_labels_layer(self.viewer, self.image_layer, self.geom.spatial,
                                                    NAMES["output"], 0.5)
            self.output_box.setCurrentText(self.output_layer.name)
            self.viewer.layers.selection.active = self.points_layer
        return self.output_layer

    def _on_obj_id(self, value: int) -> None:
        for layer in (self.points_layer, self.boxes_layer):
            if layer is not None:
                defaults = {"obj_id": int(value)}
                if layer is self.points_layer:
                    defaults["prompt"] = L.NEGATIVE if self.state.negative else L.POSITIVE
                layer.feature_defaults = defaults
        if self.current_layer is not None:
            self.current_layer.selected_label = int(value)

    # ------------------------------------------------------------------ model
    def load_model(self, source: str) -> Any:
        """Load ``source`` in a worker; remembered in the settings once loaded."""
        return self._start(load_model_steps(source), f"loading {source}", self._on_model)

    def _on_model(self, msg: ModelLoaded) -> None:
        from ..predictor import ImagePredictor

        cache = self.cache_edit.text().strip() or None
        self.state.model = msg.model
        self.state.source = msg.source
        self.state.predictor = ImagePredictor(msg.model, cache=cache)
        self.state.embedded = None
        self.settings.remember_model(msg.source)
        self.settings.cache_dir = cache or ""
        save_settings(self.settings)
        if self.model_box.findText(msg.source) < 0:
            self.model_box.insertItem(0, msg.source)
        self.model_box.setCurrentText(msg.source)
        self._say(f"model {msg.source} loaded ({'tracks' if msg.model.has_video else 'image only'})")

    def _on_cache_dir(self) -> None:
        """A new cache folder applies to the next embedding (and is remembered)."""
        from ..predictor import ImagePredictor

        cache = self.cache_edit.text().strip() or None
        if self.state.model is not None and self.worker is None:
            self.state.predictor = ImagePredictor(self.state.model, cache=cache)
            self.state.embedded = None
        self.settings.cache_dir = cache or ""
        save_settings(self.settings)

    # ------------------------------------------------------------------ prompts and clicks
    def _on_press(self, layer: Any, event: Any) -> None:
        """Ctrl- (or Alt-) click adds a negative point; a plain click follows the T toggle."""
        if layer.mode != "add":
            return
        neg = self.state.negative ^ bool({"Control", "Alt"} & set(event.modifiers))
        layer.feature_defaults = {"prompt": L.NEGATIVE if neg else L.POSITIVE, "obj_id": self.obj_id}

    def toggle_negative(self) -> None:
        self.state.negative = not self.state.negative
        self._on_obj_id(self.obj_id)
        self._say("new points are " + ("negative" if self.state.negative else "positive"))

    def _on_prompts_changed(self, event: Any = None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(action) not in ("added", "removed", "changed", "ActionType.ADDED",
                                                       "ActionType.REMOVED", "ActionType.CHANGED"):
            return
        self.segment()

    def current_prefix(self) -> tuple[int, ...]:
        return L.current_prefix(self.viewer, self.image_layer, self.geom)

    def _prompt_for(self, obj_id: int, prefix: tuple[int, ...]) -> ObjectPrompt:
        """Points and the last box of ``obj_id`` on plane ``prefix``, in (x, y) plane pixels."""
        pts, boxes = self.points_layer, self.boxes_layer
        n = len(prefix)
        coords = L.to_image_data(np.asarray(pts.data), pts, self.image_layer)
        feats = pts.features
        sel = L.on_plane(coords, prefix)
        if len(feats):
            sel &= feats["obj_id"].to_numpy() == obj_id
        positive = feats["prompt"].to_numpy()[sel] == L.POSITIVE if len(feats) else np.zeros(0, bool)
        box = None
        bfeats = boxes.features
        for i in range(len(boxes.data) - 1, -1, -1):
            if boxes.shape_type[i] != "rectangle" or (len(bfeats) and int(bfeats["obj_id"].iloc[i]) != obj_id):
                continue
            corners = L.to_image_data(np.asarray(boxes.data[i]), boxes, self.image_layer)
            if L.on_plane(corners, prefix).all():
                box = corners[:, n:]
                break
        return make_prompt(coords[sel][:, n:], positive, box, self.geom.hw)

    def _plane_key(self, prefix: tuple[int, ...]) -> tuple:
        return (id(self.geom.data), prefix, self.channels)

    def _forget_embedding(self) -> None:
        self.state.embedded = None

    def segment(self) -> None:
        """Click-to-mask for the current object on the current plane (GUI thread); embeds the
        plane in a worker first when needed, then segments."""
        if self.image_layer is None or self.points_layer is None:
            return
        if self.state.model is None:
            self._say("load a model first")
            return
        prefix = self.current_prefix()
        key = self._plane_key(prefix)
        if self.state.embedded != key:
            self.state.pending_click = True
            if self.worker is None:
                self._start(embed_steps(self.state.predictor, self.geom.plane(prefix), key, self.channels,
                                        self._fresh_cancel()), "embedding", self._on_embedded)
            return
        self.state.pending_click = False
        prompt = self._prompt_for(self.obj_id, prefix)
        old = self.current_layer.data[prefix] == self.obj_id
        if prompt.empty:
            mask = np.zeros_like(old)
        else:
            mask, score = click_mask(self.state.predictor, prompt)
            self._say(f"object {self.obj_id}: {int(mask.sum())} pixels, predicted IoU {score:.2f}")
        # only the changed pixels are written, and napari redraws only their bounding box
        _set_pixels(self.current_layer, prefix, old != mask, mask, self.obj_id)
        self.state.touched.add(prefix)

    def _on_embedded(self, msg: Embedded) -> None:
        self.state.embedded = msg.key

    # ------------------------------------------------------------------ commit, clear, undo
    def _layer_prompts(self) -> dict[int, dict[tuple, ObjectPrompt]]:
        """Prompts of every object in the prompt layers: obj_id -> plane -> prompt."""
        out: dict[int, dict[tuple, ObjectPrompt]] = {}
        n = self.geom.n_lead
        planes: set[tuple[tuple, int]] = set()
        for layer in (self.points_layer, self.boxes_layer):
            feats = layer.features
            data = layer.data if layer is self.boxes_layer else list(np.asarray(layer.data))
            for i, d in enumerate(data):
                c = L.to_image_data(np.atleast_2d(np.asarray(d)), layer, self.image_layer)
                prefix = tuple(int(v) for v in np.round(c[0, :n]))
                planes.add((prefix, int(feats["obj_id"].iloc[i]) if len(feats) else self.obj_id))
        for prefix, obj in planes:
            p = self._prompt_for(obj, prefix)
            if not p.empty:
                out.setdefault(obj, {})[prefix] = p
        return out

    def _busy(self) -> bool:
        """True (and says so) while a worker runs: edits of the output wait for it (the keys stay
        bound while the buttons are disabled)."""
        if self.worker is not None:
            self._say("busy: wait for the running task or cancel it")
        return self.worker is not None

    def commit(self) -> Edit | None:
        """Write the uncommitted objects (the current layer) into the output; clear the prompts;
        move to a new object id. Undoable."""
        if self.image_layer is None or self._busy():
            return None
        output = self._output()
        before = {o: dict(p) for o, p in self.state.committed.items()}
        for obj, per in self._layer_prompts().items():
            self.state.committed.setdefault(obj, {}).update(per)
        edit = Edit("commit")
        for prefix in sorted(self.state.touched):
            cur = self.current_layer.data[prefix]
            ids = [int(i) for i in np.unique(cur) if i]
            if not ids:
                continue
            new = paint_objects(output.data[prefix], ids, np.stack([cur == i for i in ids]), replace=True)
            write_plane(output.data, prefix, new, edit)
        if edit.planes or before != self.state.committed:
            self._push_undo(edit, before)
        output.refresh()
        self._clear_layers()
        self.obj_spin.setValue(next_free_id(output.data, taken=list(self.state.committed)))
        self._say(f"committed: {edit.pixels} pixels changed; next object {self.obj_id}")
        return edit

    def _push_undo(self, edit: Edit, before: dict) -> None:
        self.state.undo.append(_Undo(edit, before))
        del self.state.undo[:-MAX_UNDO]

    def _clear_layers(self, obj_id: int | None = None) -> None:
        """Remove prompts and current masks (of one object, or of all)."""
        for layer in (self.points_layer, self.boxes_layer):
            if len(layer.data) == 0:
                continue
            feats = layer.features
            keep = np.zeros(len(layer.data), bool) if obj_id is None else feats["obj_id"].to_numpy() != obj_id
            if keep.all():
                continue
            with layer.events.data.blocker():
                layer.selected_data = set(np.flatnonzero(~keep).tolist())
                layer.remove_selected()
        for prefix in list(self.state.touched):
            plane = self.current_layer.data[prefix]
            new = np.zeros_like(plane) if obj_id is None else np.where(plane == obj_id, 0, plane)
            write_plane(self.current_layer.data, prefix, new, None)
            if obj_id is None or not new.any():
                self.state.touched.discard(prefix)
        self.current_layer.refresh()

    def clear_prompts(self) -> None:
        """Drop the current object's prompts and mask (Shift-C)."""
        if self.points_layer is not None:
            self._clear_layers(self.obj_id)
            self._say(f"object {self.obj_id}: prompts cleared")

    def next_object(self) -> None:
        """Start a new object (N); objects prompted so far stay until committed or propagated."""
        if self.current_layer is None:
            return
        taken = [*self.state.committed, *(int(i) for i in self.points_layer.features.get("obj_id", []))]
        out = self.output_layer.data if self.output_layer is not None else None
        self.obj_spin.setValue(next_free_id(self.current_layer.data, out, taken=taken))
        self._say(f"new object {self.obj_id}")

    def undo(self) -> bool:
        """Revert the last commit, propagation or automatic segmentation (U)."""
        if self._busy():
            return False
        if not self.state.undo or self.output_layer is None:
            self._say("nothing to undo")
            return False
        u = self.state.undo.pop()
        undo_edit(self.output_layer.data, u.edit)
        self.state.committed = u.committed
        self.output_layer.refresh()
        self._say(f"undone: {u.edit.description} ({u.edit.pixels} pixels)")
        return True

    # ------------------------------------------------------------------ long work
    def propagate(self, direction: str | None = None) -> Any:
        """Commit, then track every committed object of this stack through its frames
        (``direction``: forward, backward or both; default: the widget's choice)."""
        if self.mode not in STACK_MODES:
            raise ValueError(f"propagate needs a stack mode ({', '.join(STACK_MODES)}), the mode is {self.mode!r}")
        if self.state.model is None:
            raise ValueError("load a model first")
        if self._busy():
            return None
        direction = direction or self.direction_box.currentText()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.commit()
        here = self.current_prefix()[:-1]
        prompts: dict[int, dict[int, ObjectPrompt]] = {}
        for obj, per in self.state.committed.items():
            for prefix, p in per.items():
                if prefix[:-1] == here:
                    prompts.setdefault(obj, {})[prefix[-1]] = p
        if not prompts:
            self._say("nothing to propagate: click on an object first")
            return None
        self._edit = Edit(f"propagate {direction}")
        self._push_undo(self._edit, {o: dict(p) for o, p in self.state.committed.items()})
        self._frame_prefix = here
        frames = self.geom.frames(self.current_prefix())
        gen = track_steps(self.state.model, frames, prompts, direction, self.channels, self._fresh_cancel())
        return self._start(gen, f"propagate {direction}", self._on_frame)

    def _on_frame(self, msg: FrameResult) -> None:
        output = self.output_layer
        index = self._frame_prefix + (msg.frame,)
        new = paint_objects(output.data[index], msg.obj_ids, msg.masks, replace=True)
        write_plane(output.data, index, new, self._edit)
        output.refresh()
        self._say(f"frame {msg.frame}: {msg.done} of {msg.total}")

    def segment_everything(self) -> Any:
        """Automatic masks on the current plane, added to the output where it is background."""
        if self.state.model is None or self.image_layer is None:
            raise ValueError("load a model and pick an image first")
        if self._busy():
            return None
        output = self._output()
        prefix = self.current_prefix()
        first = next_free_id(output.data, taken=list(self.state.committed))
        self._auto_prefix = prefix
        cache = self.cache_edit.text().strip() or None
        gen = automask_steps(self.state.model, self.geom.plane(prefix), first, self.channels, self._fresh_cancel(),
                             cache=cache, points_per_side=int(self.pps_spin.value()))
        return self._start(gen, "segment everything", self._on_auto)

    def _on_auto(self, msg: AutoResult) -> None:
        output, prefix = self.output_layer, self._auto_prefix
        plane = output.data[prefix]
        new = np.where((plane == 0) & (msg.labels > 0), msg.labels, plane).astype(plane.dtype)
        edit = Edit("segment everything")
        write_plane(output.data, prefix, new, edit)
        self._push_undo(edit, {o: dict(p) for o, p in self.state.committed.items()})
        output.refresh()
        self._say(f"segment everything: {msg.count} masks")

    def cancel(self) -> None:
        """Stop the running worker after its current step; what was written stays (undoable)."""
        self._cancel.set()
        self._say("cancelling...")

    def _fresh_cancel(self) -> threading.Event:
        self._cancel = threading.Event()
        return self._cancel

    def _start(self, gen: Any, desc: str, on_result: Any) -> Any:
        """Run generator ``gen`` in a thread worker (see ``runner``); None when one is running."""
        if self.worker is not None:
            self._say("busy: wait for the running task or cancel it")
            return None
        self.last_error = None
        cancel = self._cancel

        def on_end(outcome: str, error: BaseException | None) -> None:
            self.worker = None
            self._update_enabled()
            if outcome == END_FAILED:
                self.last_error = error
                self._say(f"{desc} failed: {error}")
                from napari.utils.notifications import show_error

                show_error(f"EdgeTAM: {desc} failed: {error}")
            elif outcome == END_CANCELLED:
                self._say(f"{desc}: cancelled; results so far kept (Undo removes them)")
            elif self.status.text() == f"{desc}...":
                self._say(f"{desc}: done")
            if self.state.pending_click and self.state.model is not None and outcome == END_DONE:
                self.segment()

        self._say(f"{desc}...")
        self.worker = start_task(gen, desc, on_result, on_end, cancel)
        self._update_enabled()
        return self.worker


def _set_pixels(layer: Any, prefix: tuple[int, ...], where: np.ndarray, mask: np.ndarray, value: int) -> None:
    """In plane ``prefix`` of a Labels layer, set the pixels ``where`` ((H, W) bool) to ``value``
    where ``mask`` is True and to 0 elsewhere, in one partial update."""
    rows, cols = np.nonzero(where)
    if rows.size:
        index = tuple(np.full(rows.size, p) for p in prefix) + (rows, cols)
        values = np.where(mask[rows, cols], value, 0).astype(layer.data.dtype)
        layer.data_setitem(index, values)
