"""The model row of the dock widget: a box listing the named checkpoints (the plugins'
registry, each with its description) and recent ones, File… and Folder… pickers, and Load.

A mixin of ``EdgeTamWidget``: it uses the widget's settings and ``load_model``.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QGridLayout, QPushButton, QWidget

from .settings import Settings

CHECKPOINT_FILTER = "EdgeTAM checkpoints (*.pt *.pth *.safetensors);;All files (*)"


class ModelPicker:
    """Pick a checkpoint: a name, a recent one, a file or a folder; then Load."""

    settings: Settings

    def _build_model_row(self) -> QWidget:
        from ..plugins.manager import get_plugin_manager

        self.model_box = QComboBox(editable=True)
        self.model_box.setToolTip("the checkpoint: a named one from the list, a local folder or edgetam.pt "
                                  "(File… / Folder…), or a hub id already in the local cache")
        self.model_box.lineEdit().setPlaceholderText("pick a name, or File… / Folder…")
        named = get_plugin_manager().checkpoints()
        for item in [self.settings.model, *self.settings.recent]:
            if item and self.model_box.findText(item) < 0:
                self.model_box.addItem(item)
                self.model_box.setItemData(self.model_box.count() - 1, "recently loaded", Qt.ItemDataRole.ToolTipRole)
        for name, spec in named.items():
            if self.model_box.findText(name) < 0:
                self.model_box.addItem(name)
            tip = f"named checkpoint: {spec.description or spec.source}"
            self.model_box.setItemData(self.model_box.findText(name), tip, Qt.ItemDataRole.ToolTipRole)
        self.model_box.setCurrentText(self.settings.model or next(iter(named), ""))
        self.model_file_button = QPushButton("File…")
        self.model_file_button.setToolTip("pick a checkpoint file (edgetam.pt, .safetensors) and load it")
        self.model_file_button.clicked.connect(self._browse_model_file)
        self.model_folder_button = QPushButton("Folder…")
        self.model_folder_button.setToolTip("pick a checkpoint folder (config.json + model.safetensors) and load it")
        self.model_folder_button.clicked.connect(self._browse_model_folder)
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("load the checkpoint named in the model box (in the background)")
        self.load_button.clicked.connect(lambda: self.load_model(self.model_box.currentText()))
        row = QWidget()
        grid = QGridLayout(row)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.model_box, 0, 0, 1, 3)
        grid.addWidget(self.model_file_button, 1, 0)
        grid.addWidget(self.model_folder_button, 1, 1)
        grid.addWidget(self.load_button, 1, 2)
        return row

    def _model_start_dir(self) -> str:
        text = self.model_box.currentText().strip()
        path = Path(text).expanduser() if text else None
        if path is not None and path.exists():
            return str(path if path.is_dir() else path.parent)
        return str(Path.home())

    def _browse_model_file(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(self, "EdgeTAM checkpoint file", self._model_start_dir(),
                                                    CHECKPOINT_FILTER)
        self._picked_model(path)

    def _browse_model_folder(self) -> None:
        self._picked_model(QFileDialog.getExistingDirectory(self, "EdgeTAM checkpoint folder", self._model_start_dir()))

    def _picked_model(self, path: str) -> None:
        """A file or folder picked: shown in the model box and loaded (a cancelled dialog: nothing)."""
        if not path:
            return
        self.model_box.setCurrentText(path)
        self.load_model(path)

    def _model_controls_enabled(self, enabled: bool) -> None:
        for control in (self.load_button, self.model_file_button, self.model_folder_button):
            control.setEnabled(enabled)
