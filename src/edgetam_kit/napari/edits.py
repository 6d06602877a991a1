"""Edits of the Labels layers on the GUI thread: commit the current objects into the output,
clear prompts, start a new object, undo.

A mixin of ``EdgeTamWidget``: it uses the widget's layers, state and controls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .state import WidgetState
from .work import Edit, next_free_id, paint_objects, undo_edit, write_plane


class LabelEditing:
    """Commit (C), clear (Shift-C), next object (N) and undo (U)."""

    state: WidgetState
    image_layer: Any
    points_layer: Any
    boxes_layer: Any
    current_layer: Any
    output_layer: Any
    worker: Any

    def _ready_for_edits(self) -> bool:
        """True when an image is annotated (its deleted plugin layers are made again); else
        says what is missing."""
        if self._ensure_layers():
            return True
        self._say("no image: open one and pick it in the image list")
        return False

    def _busy(self) -> bool:
        """True (and says so) while a worker runs: edits of the output wait for it (the keys stay
        bound while the buttons are disabled)."""
        if self.worker is not None:
            self._say("busy: wait for the running task or cancel it")
        return self.worker is not None

    def commit(self) -> Edit | None:
        """Write the uncommitted objects (the current layer) into the output; clear the prompts;
        move to a new object id. Undoable."""
        if not self._ready_for_edits() or self._busy():
            return None
        output = self._output()
        before = self.state.committed_copy()
        for obj, per in self._layer_prompts().items():
            self.state.committed.setdefault(obj, {}).update(per)
        edit = Edit("commit")
        for prefix in sorted(self.state.touched):
            cur = self.current_layer.data[prefix]
            ids = [int(i) for i in np.unique(cur) if i]
            if not ids:
                continue
            self._note_objects(ids, "click")
            new = paint_objects(output.data[prefix], ids, np.stack([cur == i for i in ids]), replace=True)
            write_plane(output.data, prefix, new, edit)
        if edit.planes or before != self.state.committed:
            self.state.push_undo(edit, before)
        output.refresh()
        self._clear_layers()
        self.obj_spin.setValue(next_free_id(output.data, taken=list(self.state.committed)))
        self._save()
        self._say(f"committed: {edit.pixels} pixels changed; next object {self.obj_id}")
        return edit

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
        changed = False
        for prefix in list(self.state.touched):
            plane = self.current_layer.data[prefix]
            new = np.zeros_like(plane) if obj_id is None else np.where(plane == obj_id, 0, plane)
            changed |= bool((plane != new).any())
            write_plane(self.current_layer.data, prefix, new, None)
            if obj_id is None or not new.any():
                self.state.touched.discard(prefix)
        self.state.last_click = None
        if changed:
            self.current_layer.refresh()

    def clear_prompts(self) -> None:
        """Drop the current object's prompts and mask (Shift-C)."""
        if self._ready_for_edits():
            self._clear_layers(self.obj_id)
            self._say(f"object {self.obj_id}: prompts cleared")

    def next_object(self) -> None:
        """Start a new object (N); objects prompted so far stay until committed or propagated."""
        if not self._ready_for_edits():
            return
        taken = [*self.state.committed, *(int(i) for i in self.points_layer.features.get("obj_id", []))]
        out = self.output_layer.data if self.output_layer is not None else None
        self.obj_spin.setValue(next_free_id(self.current_layer.data, out, taken=taken))
        self._say(f"new object {self.obj_id}")

    def undo(self) -> bool:
        """Revert the last commit, propagation or automatic segmentation (U)."""
        if self._busy():
            return False
        if self.state.undo and not self._alive(self.output_layer):
            self.state.undo.clear()  # the layer those edits were made in was deleted
            self._say("nothing to undo: the objects layer was deleted")
            return False
        if not self.state.undo:
            self._say("nothing to undo")
            return False
        u = self.state.undo.pop()
        undo_edit(self.output_layer.data, u.edit)
        self.state.committed = u.committed
        self.output_layer.refresh()
        self._save()
        self._say(f"undone: {u.edit.description} ({u.edit.pixels} pixels)")
        return True
