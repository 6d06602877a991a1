"""The plugin's layers of each image and the widget's life in the viewer: layers named after
their image, shown only with it, adopted when the widget is reopened, recreated when deleted,
renamed with the image; clicks that land whatever layer is selected; teardown when the dock
closes.

A mixin of ``EdgeTamWidget``: it uses the widget's layers, state and controls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import layers as L
from .state import WidgetState
from .work import next_free_id, planes_holding

# keys bound on the plugin's layers and on the image being annotated
KEYS = {"commit": "c", "clear": "Shift-C", "next": "n", "undo": "u", "toggle": "t",
        "next_image": "Shift-N", "previous_image": "Shift-B"}
OPACITY = {"current": 0.6, "output": 0.5, "review": 0.7}
LAYER_ROLES = ("current", "boxes", "points")  # made in this order (points on top); output on demand


class ImageLayers:
    """Per-image plugin layers, key bindings and canvas clicks; teardown."""

    state: WidgetState
    viewer: Any
    image_layer: Any
    geom: L.ImageGeometry
    worker: Any

    # ------------------------------------------------------------------ layers of an image
    def _alive(self, layer: Any) -> bool:
        return layer is not None and layer in self.viewer.layers

    def _attach(self, image: Any) -> None:
        """Annotate ``image``: its state and layers (kept, adopted or created), keys bound on
        it, the other images' plugin layers hidden, the object id continued."""
        previous = self.image_layer
        if previous is not None and previous is not image:
            self.state.image.obj_id = self.obj_id
            self._unbind_keys(previous)
        self.image_layer = image
        self.geom = L.ImageGeometry.of(image)
        others = [ly for ly in self._image_layers() if ly is not image]
        self.state.image_state(L.image_uid(image, others))
        self._ensure_layers()
        self._resume()
        self._select_output_choice()
        self._bind_keys(image)
        self._show_only_current()
        self._continue_ids()
        self.viewer.layers.selection.active = self.points_layer

    def _ensure_layers(self) -> bool:
        """Make sure the current image has its prompt and current layers (a deleted one is
        adopted from a tagged layer or made anew). False when no image is annotated."""
        image = self.image_layer
        if image is None or not self._alive(image):
            return False
        st = self.state.image
        out = st.layers.get("output")
        if all(self._alive(st.layers.get(r)) for r in LAYER_ROLES) and (out is None or self._alive(out)):
            return True  # the click path: nothing to look up
        tagged = L.find_plugin_layers(self.viewer.layers, L.image_uid(image))
        for role in LAYER_ROLES:
            layer = st.layers.get(role)
            if self._alive(layer) and self._fits(layer, role):
                continue
            layer = tagged.get(role)
            if layer is None or not self._fits(layer, role):
                layer = self._make_layer(role)
            if role == "current":  # adopted (reopened widget) or new: the planes holding masks
                st.touched = self._planes_with_labels(layer)
            st.layers[role] = layer
            self._hook(layer, role)
        if not self._alive(out) or tuple(out.data.shape) != self.geom.spatial:
            out = tagged.get("output")
            st.layers["output"] = out if out is not None and tuple(out.data.shape) == self.geom.spatial else None
        self._select_output_choice()
        return True

    def _fits(self, layer: Any, role: str) -> bool:
        if role == "current":
            return tuple(layer.data.shape) == self.geom.spatial
        return int(layer.ndim) == len(self.geom.spatial)

    def _planes_with_labels(self, layer: Any) -> set:
        return planes_holding(np.asarray(layer.data) != 0)

    def _make_layer(self, role: str) -> Any:
        image, geom, viewer = self.image_layer, self.geom, self.viewer
        name = L.plugin_layer_name(role, image.name)
        if role == "points":
            layer = L.make_points_layer(viewer, image, len(geom.spatial), name)
            layer.mode = "add"
        elif role == "boxes":
            layer = L.make_shapes_layer(viewer, image, len(geom.spatial), name)
            layer.features = {"obj_id": np.zeros(0, int)}
        else:
            layer = L.make_labels_layer(viewer, image, geom.spatial, name, OPACITY[role])
        L.tag(layer, role, L.image_uid(image))
        return layer

    def _output(self) -> Any:
        """The current image's output layer (made when missing, just below its current layer)."""
        self._ensure_layers()
        st = self.state.image
        if not self._alive(st.layers.get("output")):
            layer = self._make_layer("output")
            st.layers["output"] = layer
            layers = self.viewer.layers
            layers.move(layers.index(layer), layers.index(st.layers["current"]))
            self._refresh_layer_choices()
            self.viewer.layers.selection.active = self.points_layer
        return st.layers["output"]

    def _hook(self, layer: Any, role: str) -> None:
        """Connect a plugin layer to the widget (events, the press callback, keys)."""
        if role in ("points", "boxes"):
            layer.events.data.connect(self._on_prompts_changed)
        if role == "points":
            if self._on_press not in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.insert(0, self._on_press)
            L.set_point_defaults(layer, L.NEGATIVE if self.state.negative else L.POSITIVE, self.obj_id)
        if role == "boxes":
            layer.feature_defaults = {"obj_id": self.obj_id}
        if role != "output":
            self._bind_keys(layer)

    def _unhook(self, layer: Any) -> None:
        layer.events.data.disconnect(self._on_prompts_changed)
        if self._on_press in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.remove(self._on_press)
        self._unbind_keys(layer)

    def _show_only_current(self) -> None:
        """Plugin layers are visible with their image only (``visible`` is set only when it
        changes: napari resets a layer's mode to pan/zoom on any write of it)."""
        uid = L.image_uid(self.image_layer)
        mine = {id(ly) for ly in self.state.image.layers.values() if ly is not None}
        others = [ly for st in self.state.images.values() for ly in st.layers.values() if self._alive(ly)]
        for layer in [*others, *self.viewer.layers]:
            t = L.tag_of(layer)
            if t is None and layer not in others:
                continue
            show = id(layer) in mine or (t is not None and t[1] == uid)
            if bool(layer.visible) != show:
                layer.visible = show

    def _continue_ids(self) -> None:
        """The object id continues from the highest used on this image."""
        st = self.state.image
        pts = self.points_layer
        taken = [*st.committed, *(int(i) for i in pts.features.get("obj_id", []))]
        out = st.layers.get("output")
        free = next_free_id(np.asarray(self.current_layer.data), None if out is None else np.asarray(out.data),
                            taken=taken)
        self.obj_spin.setValue(max(free, st.obj_id))
        self._on_obj_id(self.obj_id)

    def _on_image_renamed(self, event: Any = None) -> None:
        """Plugin layers follow their image's new name; the image list too."""
        for image in self._image_layers():
            uid = image.metadata.get(L.UID_KEY)
            if not uid:
                continue
            for role, layer in L.find_plugin_layers(self.viewer.layers, uid).items():
                name = L.plugin_layer_name(role, image.name)
                if layer.name != name:
                    layer.name = name
        self._refresh_layer_choices()

    # ------------------------------------------------------------------ canvas clicks
    def _on_canvas_press(self, viewer: Any, event: Any) -> Any:
        """The viewer's press callback. When the prompts layer is not the one taking the click
        (napari selected another layer, e.g. a newly added image, in pan/zoom mode), a click
        without a drag adds the prompt here, or the widget says what is missing."""
        if getattr(event, "button", 1) != 1:
            return
        active = viewer.layers.selection.active
        points = self.points_layer
        flat = viewer.dims.ndisplay == 2
        if flat and active is not None and active is points and self._alive(points) and points.mode == "add":
            return  # napari adds the point on the release (see _on_press)
        if active is not None and getattr(active, "mode", "pan_zoom") != "pan_zoom":
            return  # the user is editing that layer
        start = np.asarray(event.pos, dtype=float)
        modifiers = set(event.modifiers)
        yield
        while event.type == "mouse_move":
            yield
        if np.abs(np.asarray(event.pos, dtype=float) - start).max() > 3:
            return  # a drag: napari panned or rotated the view
        self._click_from_canvas(active, event.position, bool({"Control", "Alt"} & modifiers))

    def _click_from_canvas(self, active: Any, position: Any, modifier: bool) -> None:
        """Add a prompt point at world ``position`` (a click the prompts layer did not take)."""
        from napari.layers import Image

        if self.viewer.dims.ndisplay == 3:
            self._say("clicks in the 3D view are ignored: switch to the 2D view to add prompts")
            return
        if not self._image_layers():
            self._say("no image: open one (File > Open, or File > Open Sample), then click on it")
            return
        if isinstance(active, Image) and active is not self.image_layer:
            self.set_image_layer(active)
        if self.image_layer is None:
            self._say("pick an image in the widget's image list, then click on it")
            return
        if self.state.model is None:
            self._say("no model: load one (model, then Load); the click was not added")
            return
        self._ensure_layers()
        pts = self.points_layer
        coords = np.asarray(pts.world_to_data(position), dtype=float).reshape(1, -1)
        rc = L.to_image_data(coords, pts, self.image_layer)[0]
        if not all(-0.5 <= c <= s - 0.5 for c, s in zip(rc, self.geom.spatial)):
            self._say(f"the click is outside the image '{self.image_layer.name}'")
            return
        neg = self.state.negative ^ modifier
        L.set_point_defaults(pts, L.NEGATIVE if neg else L.POSITIVE, self.obj_id)
        pts.add(coords)

    def _on_ndisplay(self, event: Any = None) -> None:
        """In the 3D view the prompts layer leaves add mode (a click there would land on the
        current slice); back in 2D it returns to it."""
        pts = self.points_layer
        if not self._alive(pts):
            return
        if self.viewer.dims.ndisplay == 3 and pts.mode == "add":
            pts.mode = "pan_zoom"
            self._left_add_mode = True
        elif self.viewer.dims.ndisplay == 2 and getattr(self, "_left_add_mode", False):
            pts.mode = "add"
            self._left_add_mode = False

    # ------------------------------------------------------------------ keys
    def _bind_keys(self, layer: Any) -> None:
        actions = {"commit": self.commit, "clear": self.clear_prompts, "next": self.next_object, "undo": self.undo,
                   "next_image": self.next_image, "previous_image": self.previous_image}
        if layer is self.points_layer or layer is self.image_layer:
            actions["toggle"] = self.toggle_negative
        for name, fn in actions.items():
            layer.bind_key(KEYS[name], lambda _layer, fn=fn: fn(), overwrite=True)

    def _unbind_keys(self, layer: Any) -> None:
        for key in KEYS.values():
            layer.bind_key(key, None)

    # ------------------------------------------------------------------ teardown
    def teardown(self) -> None:
        """Disconnect the widget from the viewer (layer events, mouse callbacks, key bindings)
        and stop its worker; the layers stay. Called when the dock is closed."""
        if getattr(self, "_torn_down", False):
            return
        self._torn_down = True
        self._cancel.set()
        self._stop_prefetch()
        if self.worker is not None:
            self.worker.quit()
        v = self.viewer
        v.layers.events.inserted.disconnect(self._refresh_layer_choices)
        v.layers.events.removed.disconnect(self._refresh_layer_choices)
        v.dims.events.ndisplay.disconnect(self._on_ndisplay)
        if self._on_canvas_press in v.mouse_drag_callbacks:
            v.mouse_drag_callbacks.remove(self._on_canvas_press)
        for layer in v.layers:
            if L.tag_of(layer) is not None:
                self._unhook(layer)
            if hasattr(layer, "events") and hasattr(layer.events, "name"):
                layer.events.name.disconnect(self._on_image_renamed)
        if self.image_layer is not None:
            self._unbind_keys(self.image_layer)
        self.state.images.clear()
        self.image_layer = None
