"""Click-to-mask: the prompt layers' points and boxes -> the current object's mask, on the GUI
thread from the plane's cached embedding (the plane is embedded in a worker first when needed).

A mixin of ``EdgeTamWidget``: it uses the widget's layers, state and controls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import layers as L
from .state import LastClick, PromptRecords, WidgetState
from .work import Embedded, ObjectPrompt, click_mask, embed_steps, make_prompt

_PROMPT_ACTIONS = ("added", "removed", "changed", "ActionType.ADDED", "ActionType.REMOVED", "ActionType.CHANGED")


class PromptHandling:
    """Points and boxes -> prompts -> the current object's mask in the ``edgetam current`` layer."""

    state: WidgetState
    viewer: Any
    image_layer: Any
    points_layer: Any
    boxes_layer: Any
    current_layer: Any
    geom: L.ImageGeometry
    worker: Any

    def _on_press(self, layer: Any, event: Any) -> None:
        """Ctrl- (or Alt-) click adds a negative point; a plain click follows the T toggle.

        napari adds the point when the button is released. The mask for the prompt with that
        point is decoded here, on the press, so that the release only has to show it: the
        release -> Labels wait is napari's own work. A release at another position (a drag) gets
        its own decode; the press's result is then simply not used."""
        if layer.mode != "add":
            return
        neg = self.state.negative ^ bool({"Control", "Alt"} & set(event.modifiers))
        kind = L.NEGATIVE if neg else L.POSITIVE
        defaults = layer.feature_defaults
        # setting feature_defaults updates the layer's colour managers: only when they change
        if not (len(defaults) and defaults["prompt"].iloc[0] == kind
                and int(defaults["obj_id"].iloc[0]) == self.obj_id):
            L.set_point_defaults(layer, kind, self.obj_id)
        self._decode_ahead(layer, getattr(event, "position", None), not neg)

    def _decode_ahead(self, layer: Any, position: Any, positive: bool) -> None:
        """Decode the current object's prompt with a point at world ``position`` added, as the
        release will add it (``LastClick`` then holds the result). Only on an embedded plane."""
        if position is None or self.image_layer is None or self.state.model is None:
            return
        prefix = self.current_prefix()
        key = self._plane_key(prefix)
        if self.state.embedded != key:
            return  # the click embeds the plane in a worker first
        point = np.asarray(layer.world_to_data(position), dtype=float).reshape(1, -1)
        prompt = self._prompt_for(self.obj_id, prefix, extra=(point, positive))
        if not prompt.empty:
            self._decode(key, self.obj_id, prompt)

    def toggle_negative(self) -> None:
        """Toggle what a plain click adds: a positive or a negative point (T)."""
        self.state.negative = not self.state.negative
        self._on_obj_id(self.obj_id)
        self._say("new points are " + ("negative" if self.state.negative else "positive"))

    def _on_prompts_changed(self, event: Any = None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(action) not in _PROMPT_ACTIONS:
            return
        self.segment()
        pts = self.points_layer
        toggle = L.NEGATIVE if self.state.negative else L.POSITIVE
        defaults = pts.feature_defaults if pts is not None else ()
        if len(defaults) and defaults["prompt"].iloc[0] != toggle:  # after a Ctrl-click: back to the toggle
            L.set_point_defaults(pts, toggle, self.obj_id)

    def current_prefix(self) -> tuple[int, ...]:
        """Leading indices of the plane the viewer shows (() for a 2D image)."""
        return L.current_prefix(self.viewer, self.image_layer, self.geom)

    def _prompt_for(self, obj_id: int, prefix: tuple[int, ...],
                    extra: tuple[np.ndarray, bool] | None = None) -> ObjectPrompt:
        """Points and the last box of ``obj_id`` on plane ``prefix``, in (x, y) plane pixels.
        extra: one more point of ``obj_id`` (layer data coordinates (1, ndim), positive) not in
        the layer yet."""
        pts, boxes = self.points_layer, self.boxes_layer
        n = len(prefix)
        data = np.asarray(pts.data, dtype=float).reshape(-1, pts.ndim)
        feats = pts.features
        ids = feats["obj_id"].to_numpy() if len(feats) else np.full(len(data), obj_id)
        kinds = feats["prompt"].to_numpy() == L.POSITIVE if len(feats) else np.zeros(len(data), bool)
        if extra is not None:
            data = np.concatenate([data, extra[0]])
            ids, kinds = np.append(ids, obj_id), np.append(kinds, extra[1])
        coords = L.to_image_data(data, pts, self.image_layer)
        sel = L.on_plane(coords, prefix) & (ids == obj_id)
        positive = kinds[sel]
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

    def _layer_prompts(self) -> PromptRecords:
        """Prompts of every object in the prompt layers: obj_id -> plane -> prompt."""
        out: PromptRecords = {}
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

    def _plane_key(self, prefix: tuple[int, ...]) -> tuple:
        return (id(self.geom.data), prefix, self.channels)

    def _forget_embedding(self) -> None:
        self.state.embedded = None
        self.state.last_click = None

    def segment(self) -> None:
        """Click-to-mask for the current object on the current plane (GUI thread); embeds the
        plane in a worker first when needed, then segments. Only the pixels that change are
        written into the ``edgetam current`` Labels layer."""
        if not self._ensure_layers():
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
        obj = self.obj_id
        old = self.current_layer.data[prefix] == obj  # (H, W) bool
        prompt = self._prompt_for(obj, prefix)
        if prompt.empty:
            mask = np.zeros_like(old)
        else:
            mask, score = self._decode(key, obj, prompt)
            self.state.image.scores[obj] = score
            self._say(f"object {obj}: {np.count_nonzero(mask)} pixels, predicted IoU {score:.2f}")
        L.write_object_mask(self.current_layer, prefix, old, mask, obj)
        self.state.touched.add(prefix)

    def _decode(self, key: tuple, obj_id: int, prompt: ObjectPrompt) -> tuple[np.ndarray, float]:
        """The mask (H, W) bool and score of ``prompt``; the last click's when nothing changed."""
        last, predictor = self.state.last_click, self.state.predictor
        if last is not None and last.matches(key, predictor, obj_id, prompt):
            return last.mask, last.score
        mask, score = click_mask(predictor, prompt)
        self.state.last_click = LastClick(key, predictor, obj_id, prompt, mask, score)
        return mask, score

    def _on_embedded(self, msg: Embedded) -> None:
        self.state.embedded = msg.key
        self.state.last_click = None
