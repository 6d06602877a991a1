"""Save and resume: with a project folder set, each change of an image's objects (commit, undo,
propagation, segment everything) is written there at once (``project.save_image``: atomic), and
an image whose name has saved labels is resumed when it is picked (labels, next id, prompts).

A mixin of ``EdgeTamWidget``: it uses the widget's layers, state and controls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import project as P
from .settings import Settings, save_settings
from .state import ImageState, WidgetState
from .work import next_free_id


class ProjectSaving:
    """The project folder: save on every change, resume on picking an image."""

    state: WidgetState
    settings: Settings
    image_layer: Any

    def project_folder(self) -> str:
        return self.project_edit.text().strip()

    def _on_project(self) -> None:
        """A new project folder: remembered; the current image is resumed from it when it has
        nothing committed yet, else saved into it."""
        folder = self._set_project_setting()
        if not folder or self.image_layer is None:
            return
        st = self.state.image
        st.resumed = False
        out = self.output_layer
        if out is None or not np.asarray(out.data).any():
            self._resume()
        else:
            self._save()

    def _set_project_setting(self) -> str:
        """Remember the project folder typed in the widget; returns it."""
        folder = self.project_folder()
        self.settings.project = folder
        save_settings(self.settings)
        return folder

    def _resume(self) -> None:
        """Read the current image's saved annotation (once per image): its labels into the
        objects layer, its prompts, object metadata and next id."""
        folder, st = self.project_folder(), self.state.image
        if not folder or st.resumed or self.image_layer is None:
            return
        st.resumed = True
        try:
            saved = P.load_image(folder, self.image_layer.name, self.geom.spatial)
        except (OSError, ValueError) as exc:
            self._say(f"project: could not read '{self.image_layer.name}' ({exc})")
            return
        if saved is None:
            return
        out = self._output()
        if np.asarray(out.data).any():
            return  # the layer already holds objects: they are kept, the folder is not read
        out.data[...] = saved.labels
        out.refresh()
        st.committed = saved.prompts
        st.objects = saved.objects
        st.obj_id = max(st.obj_id, saved.next_id)
        st.undo.clear()
        self._resume_note = f"resumed from the project: {len(saved.objects)} objects, next id {saved.next_id}"
        self._say(self._resume_note)

    def _save(self, image: Any = None, st: ImageState | None = None) -> None:
        """Write the objects of ``image`` (default: the current one) into the project folder."""
        folder = self.project_folder()
        image = self.image_layer if image is None else image
        st = self.state.image if st is None else st
        out = st.layers.get("output")
        if not folder or image is None or out is None:
            return
        data = np.asarray(out.data)
        next_id = max(next_free_id(data, taken=list(st.committed)), self.obj_id if st is self.state.image else 1)
        try:
            P.save_image(folder, image.name, data, next_id, st.committed, st.objects)
        except OSError as exc:
            self._say(f"project: could not save '{image.name}' into {folder} ({exc})")

    def _note_objects(self, ids: Any, source: str, st: ImageState | None = None) -> None:
        """Record where objects ``ids`` came from (and their last click's predicted IoU)."""
        st = self.state.image if st is None else st
        for i in ids:
            i = int(i)
            known = st.objects.get(i, {})
            iou = st.scores.get(i, known.get("predicted_iou"))
            st.objects[i] = {"source": known.get("source", source), "predicted_iou": iou}
