"""The widget's annotations as fine-tuning data, and the fine-tuning itself as a ``work``-style
generator. No napari import.

Training data is a pair ``(images, labels)`` of lists of planes, as ``ek.finetune`` takes it:
every (H, W) plane of an annotated image whose labels hold an object gives one image (H, W[, C])
and its label plane (instance ids, 0 = background). Planes come from the open images' objects
layers and from the project folder's saved labels (``project``), whose images are found among
the open layers or in the folder of an image series.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..progress import Cancelled
from .work import Progress, _stream, planes_holding

STAGE = "train"
TRAIN_MODES = ("decoder", "lora", "all")


@dataclass
class Annotations:
    """Planes to train on. names: where each plane comes from ("image" or "image[z]");
    left_out: images with saved labels that could not be used, and why."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)  # the names of the images added

    @property
    def n_objects(self) -> int:
        return sum(len(np.unique(lb)) - int((lb == 0).any()) for lb in self.labels)

    def add(self, name: str, image: Any, labels: Any, rgb: bool) -> int:
        """Add the planes of one image (``image``: (..., H, W[, C]); ``labels``: (..., H, W)
        integer ids) that hold an object; returns how many were added."""
        labels = np.asarray(labels)
        spatial = tuple(np.shape(image)[:-1] if rgb else np.shape(image))
        if tuple(labels.shape) != spatial:
            self.left_out.append(f"{name} (labels {tuple(labels.shape)}, image {spatial})")
            return 0
        planes = sorted(planes_holding(labels != 0))
        self.sources.add(name)
        for prefix in planes:
            self.images.append(np.array(image[prefix]))  # copies: the user may edit on meanwhile
            self.labels.append(np.array(labels[prefix], dtype=np.int64))
            self.names.append(name if not prefix else f"{name}[{','.join(str(i) for i in prefix)}]")
        return len(planes)

    def pair(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The ``(images, labels)`` pair ``ek.finetune`` takes."""
        return self.images, self.labels


def add_project(found: Annotations, folder: str | Path, find_image: Callable[[str], Any]) -> None:
    """Add the images saved in project ``folder`` that ``found`` does not hold yet.
    find_image(name) -> that image's array (..., H, W[, C]), or None when it is nowhere to be found."""
    from . import project as P

    have = set(found.sources)
    for name in P.saved_names(folder):
        if name in have:
            continue
        try:
            saved = P.load_image(folder, name)
            located = find_image(name)
        except (OSError, ValueError) as exc:
            found.left_out.append(f"{name} ({exc})")
            continue
        if saved is None or not saved.labels.any():
            continue
        if located is None:
            found.left_out.append(f"{name} (the image is not open and not in the series folder)")
            continue
        found.add(name, located, saved.labels, rgb=np.ndim(located) == saved.labels.ndim + 1)


def series_source(folder: str | Path) -> Path | None:
    """The image folder of the series saved in project ``folder`` (None: none, or open layers)."""
    import json

    from .series import SERIES_FILE

    try:
        doc = json.loads((Path(folder) / SERIES_FILE).read_text())
    except (OSError, ValueError):
        return None
    source = doc.get("source") if isinstance(doc, dict) else None
    return Path(source) if source else None


def check_out_folder(text: str) -> tuple[Path | None, str]:
    """(the output folder, "") when ``text`` names a folder fine-tuning can write to: new, empty,
    or holding an earlier run (which is resumed); else (None, why not, in the widget's terms)."""
    from ..training.state import STATE_DIR

    text = text.strip()
    if not text:
        return None, "no output folder: type one or pick it with Folder…"
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        return None, f"output folder {path} is a file: pick a folder with Folder…"
    if path.is_dir() and any(path.iterdir()) and not (path / STATE_DIR).is_dir():
        return None, f"output folder {path} already holds other files: pick a new or empty folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".edgetam-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return None, f"output folder {path} cannot be written ({exc.strerror or exc}): pick another with Folder…"
    return path, ""


@dataclass
class TrainRun:
    """One "Train on my annotations" run as the widget reports it: the output folder, the steps
    asked for (None: the default), what it trains on (text), saved images left out, and the last
    message of the run (``Finetuned`` / ``FinetuneStopped``; None until one arrives)."""

    out: Path
    steps: int | None
    data: str
    left_out: list[str]
    message: Any = None


@dataclass(frozen=True)
class TrainStep:
    """``done`` of ``total`` optimizer steps are finished (0: the run is being prepared)."""

    done: int
    total: int
    stage: ClassVar[str] = "steps"  # what done / total count (the progress bar's label)


@dataclass(frozen=True)
class Finetuned:
    """A finished run: ``result`` is the ``ek.FinetuneResult``."""

    result: Any


@dataclass(frozen=True)
class FinetuneStopped:
    """The run was cancelled; the best checkpoint so far (if any) is in ``out``, and pressing
    Train again with the same annotations and settings resumes it."""

    out: Path


def finetune_steps(source: Any, data: Any, out: Path, train: str, steps: int | None,
                   cancel: threading.Event | None = None, **options: Any
                   ) -> Iterator[TrainStep | Finetuned | FinetuneStopped]:
    """``ek.finetune(source, data, out, train, steps, **options)`` in a helper thread, yielding
    ``TrainStep(0, ...)``, one ``TrainStep`` per optimizer step, then ``Finetuned`` (or
    ``FinetuneStopped`` when cancelled)."""
    from ..training import finetune

    if train not in TRAIN_MODES:
        raise ValueError(f"train must be one of {', '.join(TRAIN_MODES)}, got {train!r}")
    cancel = cancel or threading.Event()
    yield TrainStep(0, steps or 0)

    def call(progress: Callable[[int, int], None], ev: threading.Event) -> Any:
        return finetune(source, data, out, train=train, steps=steps, progress=progress, cancel=ev, **options)

    try:
        for item in _stream(call, cancel, STAGE):
            yield TrainStep(item.done, item.total) if isinstance(item, Progress) else Finetuned(item)
    except Cancelled:
        yield FinetuneStopped(out)
    except ValueError as exc:
        if str(exc).startswith("resume:"):
            raise ValueError(f"the output folder {out} holds an earlier run on other annotations or with other "
                             "settings: pick a new or empty folder") from None
        raise


def summary(result: Any, total: int | None = None, data: str = "") -> str:
    """One line on a finished run (``total``: the steps asked for; ``data``: what it trained on):
    before / after validation IoU, steps, where it is, and a warning when the trained model is
    not better than the one it started from."""
    def iou(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    worse = False
    if result.initial_iou is None:
        score = "no validation (one annotated plane: annotate more to measure)"
    else:
        score = (f"validation IoU {iou(result.initial_iou)} → {iou(result.best_iou)}"
                 + (f" (best at step {result.best_step})" if result.best_step else ""))
        worse = result.best_iou is not None and result.best_iou <= result.initial_iou
    done = f"{result.steps_done} of {total}" if total and total != result.steps_done else f"{result.steps_done}"
    early = " (stopped early: no better validation IoU)" if result.stopped_early else ""
    line = f"trained '{result.train}'{f' on {data}' if data else ''}: {done} steps in {result.seconds:.0f} s{early}; {score}; model {result.path} loaded"
    if worse:
        line += ". It is not better than the model it started from (still in the model list): annotate more or train longer"
    return line
