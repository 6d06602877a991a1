"""Fine-tuning from the dock widget: "Train on my annotations" trains the loaded model on the
committed objects of the open images and on the project folder's saved images (``annotations``),
with ``ek.finetune`` in a thread worker (progress bar, Cancel), then loads the trained folder as
the widget's model and says the validation IoU before and after.

A mixin of ``EdgeTamWidget``: it uses the widget's layers, state, controls and ``_start``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QComboBox, QFileDialog, QGridLayout, QGroupBox, QLabel, QLineEdit, QPushButton, QSpinBox

from . import annotations as A
from . import layers as L
from .runner import END_CANCELLED, END_DONE
from .state import WidgetState
from .work import ModelLoaded

DEFAULT_OUT = "edgetam-finetuned"  # in the project folder, else in the home folder
MAX_STEPS = 100_000


class FineTuning:
    """The training group: what to train, steps, output folder, Train on my annotations."""

    state: WidgetState
    worker: Any
    train_options: dict[str, Any]  # more ``ek.finetune`` options (batch_size, lr, val_fraction, ...)

    # ------------------------------------------------------------------ UI
    def _build_train_ui(self) -> QGroupBox:
        self.train_options = {}
        box = QGroupBox("fine-tune on my annotations")
        grid = QGridLayout(box)
        self.train_box = QComboBox()
        self.train_box.addItems(A.TRAIN_MODES)
        self.train_box.setToolTip("what is trained: decoder (fast; the embedding cache stays valid), lora "
                                  "(low-rank adapters in the encoder too) or all (slowest, needs the most data)")
        self.steps_spin = QSpinBox(minimum=0, maximum=MAX_STEPS, value=200, singleStep=50)
        self.steps_spin.setSpecialValueText("auto")
        self.steps_spin.setToolTip("optimizer steps (auto: 10 passes over the annotated planes); the best "
                                   "weights by validation IoU are kept")
        self.train_out_edit = QLineEdit()
        self.train_out_edit.setPlaceholderText("output folder (optional)")
        self.train_out_edit.setToolTip("where the trained model is written (a new or empty folder; a cancelled "
                                       "run's folder resumes that run); empty: a new folder in the project "
                                       "folder (or the home folder)")
        self.train_out_browse = QPushButton("Folder…")
        self.train_out_browse.setToolTip("pick the folder the trained model is written to")
        self.train_out_browse.clicked.connect(self._browse_train_out)
        self.train_button = QPushButton("Train on my annotations")
        self.train_button.setToolTip("fine-tune the loaded model on the committed objects of the open images "
                                     "and of the project folder, then use it (Cancel stops; results so far kept)")
        self.train_button.clicked.connect(lambda: self.train_on_annotations())
        grid.addWidget(QLabel("train"), 0, 0)
        grid.addWidget(self.train_box, 0, 1)
        grid.addWidget(QLabel("steps"), 0, 2)
        grid.addWidget(self.steps_spin, 0, 3)
        grid.addWidget(self.train_out_edit, 1, 0, 1, 3)
        grid.addWidget(self.train_out_browse, 1, 3)
        grid.addWidget(self.train_button, 2, 0, 1, 4)
        return box

    def _browse_train_out(self) -> None:
        start = self.train_out_edit.text().strip() or self.project_folder() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Folder for the trained model", start)
        if folder:
            self.train_out_edit.setText(folder)

    def _training_enabled(self, busy: bool) -> None:
        ready = self.state.model is not None and not busy
        self.train_button.setEnabled(ready)
        for control in (self.train_box, self.steps_spin, self.train_out_edit, self.train_out_browse):
            control.setEnabled(not busy)

    # ------------------------------------------------------------------ data
    def training_annotations(self) -> A.Annotations:
        """The planes to train on: committed objects of the open images, then the project
        folder's saved images that are not open (found in the series folder)."""
        found = A.Annotations()
        for layer in self._image_layers():
            st = self.state.images.get(layer.metadata.get(L.UID_KEY, ""))
            out = None if st is None else st.layers.get("output")
            if self._alive(out) and out.data.any():
                geom = L.ImageGeometry.of(layer)
                found.add(layer.name, geom.data, out.data, geom.rgb)
        project = self.project_folder()
        if project:
            A.add_project(found, project, self._find_image)
        return found

    def _find_image(self, name: str) -> Any:
        """Image ``name``'s array: an open layer's, or the file in the series folder; or None."""
        from . import series as S

        for layer in self._image_layers():
            if layer.name == name:
                return L.ImageGeometry.of(layer).data
        series = getattr(self, "series", None)
        folder = series.folder if series is not None and series.folder is not None else \
            A.series_source(self.project_folder())
        if folder is not None and (folder / name).is_file():
            return S.read_image(folder / name)
        return None

    def _default_train_out(self) -> Path:
        base = Path(self.project_folder() or Path.home()).expanduser() / DEFAULT_OUT
        path, k = base, 1
        while path.exists() and (not path.is_dir() or any(path.iterdir())):
            k += 1
            path = base.with_name(f"{base.name}-{k}")
        return path

    # ------------------------------------------------------------------ run
    def train_on_annotations(self) -> Any:
        """Fine-tune the loaded model on the annotations; returns the thread worker, or None when
        nothing was started (the widget says why)."""
        if self._busy():
            return None
        if self.state.model is None:
            self._say("training: load a model first (it is the starting point)")
            return None
        data = self.training_annotations()
        if not data.labels:
            where = " or saved in the project folder" if self.project_folder() else ""
            self._say("nothing to train on: no committed objects in the open images" + where
                      + "; click objects and Commit [C] first")
            return None
        if not self.train_out_edit.text().strip():
            self.train_out_edit.setText(str(self._default_train_out()))
        out, why = A.check_out_folder(self.train_out_edit.text())
        if out is None:
            self._say(f"training: {why}")
            return None
        train, steps = self.train_box.currentText(), int(self.steps_spin.value()) or None
        self._train_run = A.TrainRun(out, steps, f"{len(data.labels)} planes ({data.n_objects} objects)",
                                     list(data.left_out))
        self._task_image_layer = None  # nothing of an image's objects to save when it ends
        gen = A.finetune_steps(self.state.source, data.pair(), out, train, steps, self._fresh_cancel(),
                               **self.train_options)
        worker = self._start(gen, "training", self._on_train_message, self._on_train_end)
        if worker is not None:
            self._say(f"training '{train}' on {len(data.labels)} planes ({data.n_objects} objects) into {out}: "
                      "preparing (first validation)…")
        return worker

    def _on_train_message(self, msg: Any) -> None:
        run = self._train_run
        if isinstance(msg, A.TrainStep):
            if msg.done:
                self._say(f"training: step {msg.done} of {msg.total}")
        elif isinstance(msg, A.Finetuned):
            run.message = msg
            self._on_model(ModelLoaded(msg.result.model, str(msg.result.path)))
        elif isinstance(msg, A.FinetuneStopped):
            run.message = msg

    def _on_train_end(self, outcome: str) -> None:
        run = self._train_run
        msg = run.message
        note = f" ({len(run.left_out)} saved images left out: {'; '.join(run.left_out)})" if run.left_out else ""
        if outcome == END_DONE and isinstance(msg, A.Finetuned):
            self._say(A.summary(msg.result, run.steps, run.data) + note)
        elif outcome == END_CANCELLED or isinstance(msg, A.FinetuneStopped):
            saved = (f"the best weights so far are in {run.out} (Folder… loads them)"
                     if (Path(run.out) / "config.json").exists() else "no weights were written yet")
            self._say(f"training cancelled; the model in use is unchanged, {saved}. Train again with the same "
                      "settings and folder to resume the run")
