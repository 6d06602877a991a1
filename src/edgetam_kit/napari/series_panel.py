"""Image series in the dock widget: a folder of images (or the open image layers) annotated one
after another. Next / Previous (Shift-N / Shift-B) commit what is pending, mark the image done
(Next only), show the next image (a folder's image replaces the previous one in the viewer; its
labels are in the project folder) and embed the image after it into the cache in the background.
The done / to-do list is a checkable list, saved in the project folder's ``series.json``.

A mixin of ``EdgeTamWidget``: it uses the widget's layers, state and controls.
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QFileDialog, QGridLayout, QGroupBox, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                            QPushButton)

from . import layers as L
from . import series as S
from .runner import start_task

EMBED_AHEAD = 1  # images embedded ahead of the one shown
DEFAULT_PROJECT = "edgetam-project"  # a folder series' project folder when none is set


class SeriesAnnotation:
    """The image-series group: folder, done / to-do list, Previous / Next, embedding ahead."""

    series: S.ImageSeries | None = None
    prefetch_worker: Any = None
    prefetched: set[str]

    # ------------------------------------------------------------------ UI
    def _build_series_ui(self) -> QGroupBox:
        box = QGroupBox("image series")
        grid = QGridLayout(box)
        self.series_edit = QLineEdit()
        self.series_edit.setPlaceholderText("folder of images")
        self.series_edit.setToolTip("a folder of images (png, jpg, tif, bmp) to annotate one after another: they "
                                    "are opened one at a time; Enter opens it")
        self.series_edit.returnPressed.connect(lambda: self.open_series_folder(self.series_edit.text()))
        self.series_browse = QPushButton("Folder…")
        self.series_browse.setToolTip("pick the folder of images to annotate")
        self.series_browse.clicked.connect(self._browse_series)
        self.series_layers_button = QPushButton("Open images")
        self.series_layers_button.setToolTip("annotate the image layers open in the viewer one after another")
        self.series_layers_button.clicked.connect(lambda: self.open_series_layers())
        self.series_list = QListWidget()
        self.series_list.setMaximumHeight(110)
        self.series_list.setToolTip("the series: a ticked image is done; double-click an image to go to it")
        self.series_list.itemChanged.connect(self._on_series_item_changed)
        self.series_list.itemActivated.connect(lambda item: self.go_to_image(self.series_list.row(item)))
        self.series_list.itemDoubleClicked.connect(lambda item: self.go_to_image(self.series_list.row(item)))
        self.previous_image_button = QPushButton("◀ Previous [Shift-B]")
        self.previous_image_button.setToolTip("commit what is pending and go back to the previous image (Shift-B)")
        self.previous_image_button.clicked.connect(lambda: self.previous_image())
        self.next_image_button = QPushButton("Next image [Shift-N] ▶")
        self.next_image_button.setToolTip("commit what is pending, mark this image done and go to the next image "
                                          "not done (Shift-N)")
        self.next_image_button.clicked.connect(lambda: self.next_image())
        self.series_label = QLabel("no series: pick a folder, or use the open images")
        self.series_label.setWordWrap(True)
        grid.addWidget(self.series_edit, 0, 0, 1, 2)
        grid.addWidget(self.series_browse, 0, 2)
        grid.addWidget(self.series_layers_button, 0, 3)
        grid.addWidget(self.series_list, 1, 0, 1, 4)
        grid.addWidget(self.previous_image_button, 2, 0, 1, 2)
        grid.addWidget(self.next_image_button, 2, 2, 1, 2)
        grid.addWidget(self.series_label, 3, 0, 1, 4)
        self.prefetched = set()
        return box

    def _browse_series(self) -> None:
        start = self.series_edit.text().strip() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Folder of images to annotate", start)
        if folder:
            self.series_edit.setText(folder)
            self.open_series_folder(folder)

    def _series_enabled(self) -> None:
        has = self.series is not None and self.worker is None
        self.previous_image_button.setEnabled(has)
        self.next_image_button.setEnabled(has)

    # ------------------------------------------------------------------ opening
    def open_series_folder(self, folder: str) -> None:
        """Annotate the images of ``folder`` one after another (resumed from the project folder,
        which defaults to ``<folder>/edgetam-project``)."""
        path = Path(str(folder).strip()).expanduser()
        try:
            names = S.list_folder(path)
        except (OSError, ValueError) as exc:
            self._say(f"series: {exc}")
            return
        if not self.project_folder():
            self.project_edit.setText(str(path / DEFAULT_PROJECT))
            self._set_project_setting()
        self._open_series(S.ImageSeries(names, path))

    def open_series_layers(self) -> None:
        """Annotate the image layers open in the viewer one after another."""
        names = [ly.name for ly in self._image_layers()]
        if not names:
            self._say("series: no image is open; open images first, or pick a folder")
            return
        self._open_series(S.ImageSeries(names))

    def _open_series(self, series: S.ImageSeries) -> None:
        if self._busy():
            return
        project = self.project_folder()
        try:
            resumed = bool(project) and S.restore_status(project, series)
        except (OSError, ValueError) as exc:
            self._say(f"series: could not read its status in {project} ({exc})")
            resumed = False
        self._close_series_images()
        self.series = series
        self.prefetched = set()
        self._show_series_image(series.index)
        where = f"saved in {project}" if project else "no project folder: nothing is saved"
        self._say(f"series of {len(series.names)} images ({'resumed, ' if resumed else ''}{series.summary()}); "
                  f"{where}")

    # ------------------------------------------------------------------ moving
    def next_image(self) -> None:
        """Commit what is pending, mark this image done, show the next image not done (Shift-N)."""
        if not self._can_move():
            return
        finished = self.series.current
        self.series.done.add(finished)
        target = self.series.next_todo()
        if target is None:
            self._save_series()
            self._refresh_series_list()
            self._say(f"series: all {len(self.series.names)} images done")
            return
        if self._show_series_image(target):
            self._say(f"'{finished}' done; image {target + 1} of {len(self.series.names)}: '{self.series.current}' "
                      f"({self.series.summary()})")

    def previous_image(self) -> None:
        """Commit what is pending and show the previous image of the series (Shift-B)."""
        if self.series is not None and self.series.index == 0:
            self._say("series: this is its first image")
        elif self._can_move():
            self._show_series_image(self.series.index - 1)

    def go_to_image(self, index: int) -> None:
        """Commit what is pending and show image ``index`` of the series."""
        if self._can_move() and index != self.series.index:
            self._show_series_image(index)

    def _can_move(self) -> bool:
        if self.series is None:
            self._say("no series: pick a folder of images, or use the open images")
            return False
        if self._busy():
            return False
        if self.image_layer is not None and self.current_layer is not None and self.current_layer.data.any():
            self.commit()  # nothing prompted is lost by moving on
        return True

    def _show_series_image(self, index: int) -> bool:
        """Show image ``index`` of the series; False (and says why) when it cannot be opened."""
        series = self.series
        series.index = index
        name = series.current
        layer = next((ly for ly in self._image_layers() if ly.name == name), None)
        if layer is None and series.folder is not None:
            try:
                data = S.read_image(series.path(name))
            except (OSError, ValueError) as exc:
                self._say(f"series: {exc}")
                return False
            layer = self.viewer.add_image(data, name=name)
        if layer is None:
            self._say(f"series: the image layer '{name}' is no longer open")
            return False
        previous = self.image_layer
        self.set_image_layer(layer)
        if series.folder is not None and previous is not None and previous is not layer:
            self._close_image(previous)
        self.viewer.reset_view()
        if self._alive(self.points_layer):  # napari selected the added image: prompting goes on
            self.viewer.layers.selection.active = self.points_layer
        self._save_series()
        self._refresh_series_list()
        self._start_prefetch()
        return True

    def _close_image(self, image: Any) -> None:
        """Take a folder image and its plugin layers out of the viewer (its labels are saved)."""
        if not self._alive(image) or image.name not in (self.series.names if self.series else ()):
            return
        uid = L.image_uid(image)
        for role, layer in L.find_plugin_layers(self.viewer.layers, uid).items():
            if role in ("points", "boxes", "current"):
                self._unhook(layer)
            self.viewer.layers.remove(layer)
        self.viewer.layers.remove(image)
        self.state.images.pop(uid, None)

    def _close_series_images(self) -> None:
        """Opening another series: the previous folder series' images leave the viewer."""
        if self.series is None or self.series.folder is None:
            return
        for image in [ly for ly in self._image_layers() if ly.name in self.series.names and ly is not self.image_layer]:
            self._close_image(image)

    # ------------------------------------------------------------------ the list
    def _refresh_series_list(self) -> None:
        series = self.series
        lst = self.series_list
        lst.blockSignals(True)
        lst.clear()
        for i, name in enumerate(series.names):
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in series.done else Qt.CheckState.Unchecked)
            if i == series.index:
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            lst.addItem(item)
        lst.setCurrentRow(series.index)
        lst.blockSignals(False)
        self.series_label.setText(f"image {series.index + 1} of {len(series.names)}: {series.current} · "
                                  f"{series.summary()}")
        self._series_enabled()

    def _on_series_item_changed(self, item: QListWidgetItem) -> None:
        """A tick set or cleared by hand: the image is done or to do."""
        if self.series is None:
            return
        name = item.text()
        if item.checkState() == Qt.CheckState.Checked:
            self.series.done.add(name)
        else:
            self.series.done.discard(name)
        self._save_series()
        self.series_label.setText(f"image {self.series.index + 1} of {len(self.series.names)}: "
                                  f"{self.series.current} · {self.series.summary()}")

    def _save_series(self) -> None:
        project = self.project_folder()
        if not project or self.series is None:
            return
        try:
            S.save_status(project, self.series)
        except OSError as exc:
            self._say(f"series: could not save its status into {project} ({exc})")

    # ------------------------------------------------------------------ embedding ahead
    def _start_prefetch(self) -> None:
        """Embed the next image(s) of the series into the cache, in a background worker that does
        not block the widget (clicks, commits) and is cancelled when the image changes."""
        self._stop_prefetch()
        cache, model, series = self._cache_dir(), self.state.model, self.series
        if cache is None or model is None or series is None:
            return
        names = series.upcoming(EMBED_AHEAD)
        if series.folder is None:
            data = {ly.name: ly.data for ly in self._image_layers()}
            reads = [(n, S.layer_reader(data[n])) for n in names if n in data]
        else:
            reads = [(n, partial(S.read_image, series.path(n))) for n in names]
        if not reads:
            return
        from ..engine.predictor import ImagePredictor

        cancel = self._prefetch_cancel = threading.Event()
        gen = S.prefetch_steps(lambda: ImagePredictor(model, cache=cache), reads, cancel)

        def on_result(msg: S.Prefetched) -> None:
            self.prefetched.add(msg.name)

        def on_end(_outcome: str, _error: BaseException | None) -> None:
            if self.prefetch_worker is worker:
                self.prefetch_worker = None

        worker = self.prefetch_worker = start_task(gen, "embedding the next image", on_result, on_end, cancel)

    def _stop_prefetch(self) -> None:
        cancel = getattr(self, "_prefetch_cancel", None)
        if cancel is not None:
            cancel.set()
        self.prefetch_worker = None
