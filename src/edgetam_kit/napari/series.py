"""An image series: a folder of images (or the open image layers) annotated one after another,
with a done / to-do list kept in the project folder, and the next images' embeddings computed
ahead into the embedding cache. No napari import.

The status file ``<project>/series.json``::

    {"version": 1, "source": "<folder>" | null, "images": [names], "done": [names], "current": name}

(names are file names for a folder, layer names for open layers; each image's labels are saved
by ``project`` under the same name).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import Cancelled
from .project import LABELS_SUFFIX, replace_atomically
from .work import Progress

SERIES_FILE = "series.json"
VERSION = 1


@dataclass
class ImageSeries:
    """The images of a series, in order; ``done``: the names marked done; ``index``: the one shown.

    folder: the folder the images are files of (None: a series of open image layers)."""

    names: list[str]
    folder: Path | None = None
    done: set[str] = field(default_factory=set)
    index: int = 0

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("names: a series needs at least one image")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"names: the images of a series need distinct names, got {self.names}")

    @property
    def current(self) -> str:
        return self.names[self.index]

    def path(self, name: str) -> Path:
        """The file of image ``name`` (a folder series only)."""
        if self.folder is None:
            raise ValueError(f"name: {name!r} is an open layer, not a file of a folder series")
        return self.folder / name

    def next_todo(self, after: int | None = None) -> int | None:
        """Index of the first image not done after ``after`` (wrapping around); None: all done."""
        start = self.index if after is None else after
        n = len(self.names)
        for k in range(1, n + 1):
            i = (start + k) % n
            if self.names[i] not in self.done:
                return i
        return None

    def upcoming(self, count: int) -> list[str]:
        """The next ``count`` images after the current one that are not done (for embedding ahead)."""
        out = [self.names[i] for i in range(self.index + 1, len(self.names)) if self.names[i] not in self.done]
        return out[:count]

    def summary(self) -> str:
        return f"{len(self.done & set(self.names))} of {len(self.names)} done"


def list_folder(folder: str | os.PathLike) -> list[str]:
    """The image files of ``folder`` (natural order: img2 before img10)."""
    from ..io.sources import ImageFolderSource

    files = ImageFolderSource(folder, check_sizes=False).files
    return [p.name for p in files if not p.name.endswith(LABELS_SUFFIX)]  # not a project's saved labels


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One image file as an array (a reader's failure is a ValueError naming the file)."""
    from ..io.sources import IMAGE_SUFFIXES, TIFF_SUFFIXES

    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"path: {path.name} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return np.asarray(tifffile.imread(path))
        import skimage.io

        return np.asarray(skimage.io.imread(path))
    except Exception as exc:  # any reader's error type
        raise ValueError(f"{path}: cannot be read as an image ({type(exc).__name__}: {exc})") from exc


def save_status(project: str | os.PathLike, series: ImageSeries) -> Path:
    """Write the series' status into the project folder (atomically); returns its path."""
    folder = Path(project)
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"version": VERSION, "source": None if series.folder is None else str(series.folder),
           "images": list(series.names), "done": [n for n in series.names if n in series.done],
           "current": series.current}
    path = folder / SERIES_FILE
    replace_atomically(path, lambda p: Path(p).write_text(json.dumps(doc, indent=1)))
    return path


def restore_status(project: str | os.PathLike, series: ImageSeries) -> bool:
    """Mark done the images the project's status file says are done, and show its current image
    (when it is still in the series). False when the project has no status file."""
    path = Path(project) / SERIES_FILE
    if not path.exists():
        return False
    doc = json.loads(path.read_text())
    if doc.get("version") != VERSION:
        raise ValueError(f"{path}: series version {doc.get('version')!r}, this edgetam-kit reads {VERSION}")
    series.done = {n for n in doc.get("done", []) if n in series.names}
    current = doc.get("current")
    if current in series.names:
        series.index = series.names.index(current)
    return True


@dataclass(frozen=True)
class Prefetched:
    """The embedding of image ``name`` is in the cache."""

    name: str


def prefetch_steps(make_predictor: Callable[[], Any], images: Sequence[tuple[str, Callable[[], Any]]],
                   cancel: threading.Event | None = None) -> Iterator[Progress | Prefetched]:
    """Embed each image of ``images`` ((name, read) pairs; ``read()`` gives the array) with a
    predictor from ``make_predictor()`` whose cache keeps the result. 2D and RGB images only (a
    stack's planes are embedded when shown). Cancelled: stops before the next image."""
    cancel = cancel or threading.Event()
    predictor = None
    for i, (name, read) in enumerate(images):
        if cancel.is_set():
            return
        yield Progress(i, len(images), "embedding ahead")
        image = np.asarray(read())
        if image.ndim > 3 or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
            continue
        predictor = predictor or make_predictor()
        try:
            predictor.set_image(image, cancel=cancel)
        except Cancelled:
            return
        yield Prefetched(name)
    yield Progress(len(images), len(images), "embedding ahead")


def layer_reader(data: Any) -> Callable[[], Any]:
    """A ``read()`` for ``prefetch_steps`` that returns an open layer's array."""
    return lambda: data
