"""The plugin's work as plain generators and numpy helpers; nothing here imports napari or Qt.

Each long-running step is a generator that yields ``Progress`` items and then one result
(``Embedded``, ``FrameResult`` per frame, ``AutoResult``, ``ModelLoaded``). The widget runs
them in a napari thread worker; tests iterate them directly.

Coordinates: napari data coordinates are (row, col) = (y, x); the engine takes (x, y).
A *plane* is one 2D image of a layer, addressed by the indices of its leading axes
(``prefix``); in the stack modes the last leading axis is the frame axis.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..progress import Cancelled

MODES = ("2D", "z-stack", "time-lapse", "RGB video")
STACK_MODES = MODES[1:]
DIRECTIONS = ("forward", "backward", "both")


# ---------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps of ``stage`` are finished (total 0: unknown)."""

    done: int
    total: int
    stage: str


@dataclass(frozen=True)
class ModelLoaded:
    model: Any  # ek.EdgeTam
    source: str


@dataclass(frozen=True)
class Embedded:
    """The predictor now holds the embedding of plane ``key``."""

    key: tuple


@dataclass(frozen=True)
class FrameResult:
    """Masks of ``obj_ids`` on frame ``frame``: (n_obj, H, W) bool; ``done`` of ``total`` frames."""

    frame: int
    obj_ids: list[int]
    masks: np.ndarray
    done: int
    total: int
    stage: ClassVar[str] = "frames"  # what done / total count


@dataclass(frozen=True)
class AutoResult:
    """Automatic masks as a label plane (H, W) uint32: ``first_id`` .. ``first_id + count - 1``."""

    labels: np.ndarray
    count: int
    first_id: int


# ---------------------------------------------------------------------- prompts
@dataclass
class ObjectPrompt:
    """One object's prompt on one plane, in (x, y) pixels of that plane.

    points: (P, 2) float; labels: (P,) int 1/0; box: (4,) x0, y0, x1, y1 or None.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    box: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return len(self.points) == 0 and self.box is None

    @property
    def multimask(self) -> bool:
        """One point and no box is ambiguous: ask for 3 masks and keep the best."""
        return len(self.points) == 1 and self.box is None

    def same_as(self, other: "ObjectPrompt") -> bool:
        """True when ``other`` has the same points, labels and box."""
        if (self.box is None) != (other.box is None):
            return False
        return (np.array_equal(self.points, other.points) and np.array_equal(self.labels, other.labels)
                and (self.box is None or np.array_equal(self.box, other.box)))

    def engine_args(self) -> dict[str, Any]:
        return {"points": self.points if len(self.points) else None,
                "labels": self.labels if len(self.points) else None,
                "box": self.box}


def rc_to_xy(coords: Any) -> np.ndarray:
    """(N, 2) (row, col) -> (N, 2) (x, y) float32."""
    arr = np.asarray(coords, dtype=np.float32).reshape(-1, 2)
    return arr[:, ::-1].copy()


def make_prompt(points_rc: Any, positive: Sequence[bool], box_rc: Any, hw: tuple[int, int]) -> ObjectPrompt:
    """Build a prompt from napari-style (row, col) points and a box given by its corners
    ((K, 2) (row, col), any K >= 2, or None). Points outside the (H, W) plane are dropped;
    the box is clipped to it."""
    h, w = hw
    xy = rc_to_xy(points_rc) if len(points_rc) else np.zeros((0, 2), np.float32)
    labels = np.asarray(positive, dtype=bool).astype(np.int64).reshape(-1)
    if len(labels) != len(xy):
        raise ValueError(f"positive must have one entry per point ({len(xy)}), got {len(labels)}")
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)
    xy = np.clip(xy[inside], 0, [w, h]).astype(np.float32)
    box = None
    if box_rc is not None:
        corners = rc_to_xy(box_rc)
        x0, y0 = np.clip(corners.min(0), 0, [w, h])
        x1, y1 = np.clip(corners.max(0), 0, [w, h])
        if x1 > x0 and y1 > y0:
            box = np.array([x0, y0, x1, y1], np.float32)
    return ObjectPrompt(xy, labels[inside], box)


def click_mask(predictor: Any, prompt: ObjectPrompt) -> tuple[np.ndarray, float]:
    """The mask (H, W) bool and its predicted IoU for ``prompt`` on the predictor's image.

    One point alone: 3 candidates, the best kept (as the trackers do; only its mask is
    upsampled); otherwise one mask."""
    r = predictor.predict(**prompt.engine_args(), multimask=prompt.multimask, best_only=True)
    return r.masks[0], float(r.scores[0])


# ---------------------------------------------------------------------- layers as frames
def guess_mode(spatial_shape: Sequence[int], rgb: bool, axis_labels: Sequence[str] = ()) -> str:
    """2D for one plane; RGB video for an RGB stack; time-lapse when the frame axis is
    labelled t/time; else z-stack."""
    leading = len(spatial_shape) - 2
    if leading <= 0:
        return "2D"
    if rgb:
        return "RGB video"
    label = str(axis_labels[leading - 1]).lower() if len(axis_labels) >= leading else ""
    return "time-lapse" if label in ("t", "time", "frame", "frames") else "z-stack"


class LayerFrames:
    """The frames of an array-like layer (numpy, dask, zarr) along its frame axis.

    data: (..., T, H, W[, C]); prefix: indices of the axes before the frame axis.
    Reads one frame at a time (``np.asarray(data[prefix + (i,)])``); a FrameSource.
    """

    def __init__(self, data: Any, prefix: tuple[int, ...], rgb: bool) -> None:
        n_lead = data.ndim - 2 - int(rgb)
        if len(prefix) != n_lead - 1:
            raise ValueError(f"prefix must index the {n_lead - 1} axes before the frame axis, got {prefix!r}")
        self.data = data
        self.prefix = tuple(int(i) for i in prefix)
        self._shape = tuple(int(s) for s in data.shape[len(self.prefix):])

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    def __len__(self) -> int:
        return self._shape[0]

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self.data[self.prefix + (int(i),)])


# ---------------------------------------------------------------------- label edits
@dataclass
class PlaneEdit:
    """Old values of the pixels changed in one plane (``index`` into the labels array)."""

    index: tuple[int, ...]
    flat: np.ndarray  # (N,) positions in the raveled plane
    old: np.ndarray  # (N,) previous labels


@dataclass
class Edit:
    """One undoable change of a labels array: a commit, a propagation, automatic masks."""

    description: str
    planes: list[PlaneEdit] = field(default_factory=list)

    @property
    def pixels(self) -> int:
        return int(sum(len(p.flat) for p in self.planes))


def write_plane(labels: np.ndarray, index: tuple[int, ...], new_plane: np.ndarray, edit: Edit | None) -> None:
    """Set ``labels[index]`` to ``new_plane`` (H, W), recording changed pixels in ``edit``
    (appended to an existing record of the same plane so undo restores the first values)."""
    plane = labels[index]
    changed = np.flatnonzero(plane != new_plane)
    if len(changed) == 0:
        return
    if edit is not None:
        seen = {p.index: p for p in edit.planes}
        rec = seen.get(index)
        old = plane.ravel()[changed]
        if rec is None:
            edit.planes.append(PlaneEdit(index, changed, old))
        else:
            fresh = ~np.isin(changed, rec.flat)
            rec.flat = np.concatenate([rec.flat, changed[fresh]])
            rec.old = np.concatenate([rec.old, old[fresh]])
    plane[np.unravel_index(changed, plane.shape)] = new_plane.ravel()[changed]


def paint_objects(plane: np.ndarray, obj_ids: Sequence[int], masks: np.ndarray, replace: bool) -> np.ndarray:
    """A copy of ``plane`` (H, W) with each object's mask painted as its id (ids in increasing
    order, so a larger id wins an overlap). replace: first erase the objects' old pixels."""
    out = plane.copy()
    order = np.argsort(np.asarray(obj_ids))
    if replace:
        out[np.isin(out, np.asarray(obj_ids, dtype=out.dtype))] = 0
    for k in order:
        out[masks[k]] = obj_ids[k]
    return out


def undo_edit(labels: np.ndarray, edit: Edit) -> list[tuple[int, ...]]:
    """Restore the pixels ``edit`` changed; returns the plane indices touched."""
    for p in reversed(edit.planes):
        plane = labels[p.index]
        plane[np.unravel_index(p.flat, plane.shape)] = p.old
    return [p.index for p in edit.planes]


def planes_holding(mask: np.ndarray) -> set[tuple[int, ...]]:
    """The leading indices of the (H, W) planes of ``mask`` (bool, any rank >= 2) holding a True."""
    if mask.ndim == 2:
        return {()} if mask.any() else set()
    flat = mask.reshape(-1, *mask.shape[-2:]).any(axis=(1, 2))
    return {tuple(int(i) for i in np.unravel_index(k, mask.shape[:-2])) for k in np.flatnonzero(flat)}


def next_free_id(*arrays: Any, taken: Sequence[int] = ()) -> int:
    """1 + the largest id in ``arrays`` and ``taken`` (numpy arrays; others are skipped)."""
    top = max([0, *taken])
    for a in arrays:
        if isinstance(a, np.ndarray) and a.size:
            top = max(top, int(a.max()))
    return top + 1


# ---------------------------------------------------------------------- long work
def _stream(call: Callable[[Callable[[int, int], None], threading.Event], Any], cancel: threading.Event,
            stage: str) -> Iterator[Any]:
    """Run ``call(progress, cancel)`` in a helper thread; yield ``Progress`` as it reports, then
    its result. A closed generator (worker quit) sets ``cancel`` and waits for the call."""
    q: queue.Queue = queue.Queue()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = call(lambda done, total: q.put(Progress(int(done), int(total), stage)), cancel)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            box["error"] = exc
        finally:
            q.put(None)

    thread = threading.Thread(target=run, name=f"edgetam-{stage}", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not None:
            yield item
    finally:
        if thread.is_alive():
            cancel.set()
        thread.join()
    if "error" in box:
        raise box["error"]
    yield box["result"]


def load_model_steps(source: str, device: str = "cpu") -> Iterator[Progress | ModelLoaded]:
    """Load a checkpoint (path, registered name or hub id)."""
    from ..io.checkpoint import CheckpointError, load_model
    from .model_errors import ModelNotFound, model_error_text

    if not isinstance(source, str) or not source.strip():
        raise ValueError("source: no checkpoint given; pick one with File… or Folder…, or type a named "
                         "checkpoint in the model box, then press Load")
    yield Progress(0, 1, "load model")
    try:
        model = load_model(source.strip(), device=device)
    except (FileNotFoundError, OSError, CheckpointError) as exc:
        raise ModelNotFound(model_error_text(source.strip(), exc)) from exc
    yield Progress(1, 1, "load model")
    yield ModelLoaded(model, source.strip())


def embed_steps(predictor: Any, image: Any, key: tuple, channels: int | None = None,
                cancel: threading.Event | None = None) -> Iterator[Progress | Embedded]:
    """Embed one plane (H, W[, C]) into ``predictor`` (tiles report progress); ends with
    ``Embedded(key)``. Cancelled: the predictor keeps its previous image; nothing is yielded."""
    cancel = cancel or threading.Event()
    plane = np.asarray(image)
    yield Progress(0, 1, "embed")
    try:
        for item in _stream(lambda progress, ev: predictor.set_image(plane, channels=channels, progress=progress,
                                                                      cancel=ev), cancel, "embed"):
            if isinstance(item, Progress):
                yield item
    except Cancelled:
        return
    yield Progress(1, 1, "embed")
    yield Embedded(key)


def track_steps(model: Any, frames: Any, prompts: dict[int, dict[int, ObjectPrompt]], direction: str = "both",
                channels: int | None = None, cancel: threading.Event | None = None,
                start: int | None = None) -> Iterator[Progress | FrameResult]:
    """Track every object of ``prompts`` (obj_id -> frame -> prompt) through ``frames``
    ((T, H, W[, C]) array-like or FrameSource), yielding one ``FrameResult`` per frame.

    Cancelled (``cancel`` set): stops after the last complete frame; nothing more is yielded.
    """
    from ..engine.tracking import VideoTracker

    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    todo = [(o, f, p) for o, per in sorted(prompts.items()) for f, p in sorted(per.items()) if not p.empty]
    if not todo:
        raise ValueError("prompts: no object has points or a box; click on an object first")
    cancel = cancel or threading.Event()
    session = VideoTracker(model, channels=channels).start(frames)
    for i, (obj_id, frame, p) in enumerate(todo):
        if cancel.is_set():
            return
        session.add_prompt(frame, obj_id, **p.engine_args())
        yield Progress(i + 1, len(todo), "prompts")
    steps = session.propagate(direction, start=start, cancel=cancel)
    total = _plan_length(session, direction, start)
    try:
        for done, (frame, obj_ids, masks) in enumerate(steps, 1):
            yield FrameResult(frame, list(obj_ids), masks, done, total)
    except Cancelled:
        return


def _plan_length(session: Any, direction: str, start: int | None) -> int:
    prompted = sorted({f for s in session.objects.values() for f in s.conditioning})
    last = session.num_frames - 1
    if direction == "forward":
        return last - (prompted[0] if start is None else start) + 1
    if direction == "backward":
        return (prompted[-1] if start is None else start) + 1
    return session.num_frames  # both: every frame once


def automask_steps(model: Any, image: Any, first_id: int = 1, channels: int | None = None,
                   cancel: threading.Event | None = None, cache: Any = None,
                   **options: Any) -> Iterator[Progress | AutoResult]:
    """Automatic masks of one plane (H, W[, C]) as a label plane, largest mask painted first
    (so smaller masks stay visible on top). ``options`` go to ``AutoMaskGenerator``."""
    from ..engine.automask import AutoMaskGenerator

    cancel = cancel or threading.Event()
    gen = AutoMaskGenerator(model, cache=cache, **options)
    plane = np.asarray(image)
    yield Progress(0, 0, "point batches")
    anns = None
    try:
        for item in _stream(lambda progress, ev: gen.generate(plane, channels=channels, progress=progress,
                                                               cancel=ev), cancel, "point batches"):
            if isinstance(item, Progress):
                yield item
            else:
                anns = item
    except Cancelled:
        return
    yield AutoResult(labels_from_annotations(anns, plane.shape[:2], first_id), len(anns), first_id)


def labels_from_annotations(anns: Sequence[dict[str, Any]], hw: tuple[int, int], first_id: int = 1) -> np.ndarray:
    """(H, W) uint32: annotation i -> ``first_id + i``; later (smaller) masks on top."""
    out = np.zeros(hw, np.uint32)
    for i, a in enumerate(anns):
        out[np.asarray(a["segmentation"], bool)] = first_id + i
    return out
