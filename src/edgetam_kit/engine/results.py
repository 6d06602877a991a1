"""Result containers for notebooks: what ``ek.collect`` returns.

- ``TrackResult``: the frames of one or more ``session.propagate(...)`` runs, per frame the
  object ids and their masks; label stacks, per-object frame counts, a montage view.
- ``AutoMasks``: ``AutoMaskGenerator.generate``'s list of dicts (unchanged, a ``list``) that
  remembers its image and shows itself as an overlay with the area histogram.
- ``Predictions``: a list of ``Prediction`` (``predict_batch``) that remembers its image.

All three render in Jupyter (``_repr_html_``/``_repr_png_``, thumbnails only) and keep a short
text ``repr``. ``ek.to_table`` turns any of them into one row per object.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..io.export import labels_from_annotations
from .display import montage, overlay
from .reprs import MAX_TILES, TILE, Description, describe_automasks, describe_predictions


class TrackResult:
    """Masks collected from ``session.propagate``: ``frame -> (obj_ids, masks (n, H, W) bool)``.

    source: the frames (array, ``FrameSource``, or a session's ``source``) shown under the
    masks; num_frames: length of the stack (default: the source's, else the last frame + 1).
    A frame collected again (a second pass after a correction) replaces the earlier one.
    """

    def __init__(self, source: Any = None, num_frames: int | None = None) -> None:
        if source is not None and hasattr(source, "source") and hasattr(source, "propagate"):
            source = source.source  # a TrackingSession
        self.source = source
        self._num_frames = num_frames
        self._data: dict[int, tuple[list[int], np.ndarray]] = {}

    # ------------------------------------------------------------------ collecting
    def add(self, frame: int, obj_ids: Iterable[int], masks: Any) -> None:
        """Store one frame's result (what ``propagate`` yields)."""
        ids = [int(i) for i in obj_ids]
        m = np.asarray(masks, dtype=bool)
        if m.ndim != 3 or len(m) != len(ids):
            raise ValueError(f"masks must be (n_obj, H, W) bool with one mask per id; got shape {m.shape} for {len(ids)} ids")
        self._data[int(frame)] = (ids, m)

    def extend(self, results: Iterable[tuple[int, Any, Any]]) -> "TrackResult":
        """Add every (frame, obj_ids, masks) of ``results``; frames added before an interrupt stay."""
        for frame, ids, masks in results:
            self.add(frame, ids, masks)
        return self

    # ------------------------------------------------------------------ reading
    @property
    def frames(self) -> list[int]:
        """Collected frame indices, ascending."""
        return sorted(self._data)

    @property
    def obj_ids(self) -> list[int]:
        """Every object id seen, in the order first seen (by frame)."""
        seen: dict[int, None] = {}
        for f in self.frames:
            seen.update(dict.fromkeys(self._data[f][0]))
        return list(seen)

    @property
    def num_frames(self) -> int:
        if self._num_frames is not None:
            return self._num_frames
        if self.source is not None:
            return len(self.source)
        return (max(self._data) + 1) if self._data else 0

    @property
    def frame_hw(self) -> tuple[int, int] | None:
        for ids, m in self._data.values():
            return int(m.shape[1]), int(m.shape[2])
        return None

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, frame: int) -> bool:
        return int(frame) in self._data

    def frame_masks(self, frame: int) -> tuple[list[int], np.ndarray]:
        """(obj_ids, masks (n, H, W) bool) of ``frame``."""
        if int(frame) not in self._data:
            raise KeyError(f"frame {frame} was not collected; collected: {self.frames[:10]}{'...' if len(self) > 10 else ''}")
        return self._data[int(frame)]

    def mask(self, frame: int, obj_id: int) -> np.ndarray:
        """(H, W) bool mask of ``obj_id`` on ``frame`` (all False when the object is absent there)."""
        ids, m = self.frame_masks(frame)
        return m[ids.index(obj_id)] if obj_id in ids else np.zeros(m.shape[1:], bool)

    def labels(self) -> np.ndarray:
        """(num_frames, H, W) uint32 label stack, 0 = background and frames not collected
        (objects painted in id order, a later id on top where masks overlap)."""
        hw = self.frame_hw
        if hw is None:
            raise ValueError("no frames collected yet")
        out = np.zeros((self.num_frames, *hw), np.uint32)
        for f, (ids, m) in self._data.items():
            for i in sorted(range(len(ids)), key=lambda k: ids[k]):
                out[f][m[i]] = ids[i]
        return out

    def frame_counts(self) -> dict[int, int]:
        """obj_id -> number of collected frames where its mask is not empty."""
        counts = dict.fromkeys(self.obj_ids, 0)
        for ids, m in self._data.values():
            present = m.reshape(len(ids), -1).any(axis=1)
            for i, p in zip(ids, present):
                counts[i] += int(p)
        return counts

    # ------------------------------------------------------------------ display
    def render(self, every: int | None = None, max_side: int | None = TILE, columns: int | None = None) -> np.ndarray:
        """Montage of the collected frames (every ``every``-th; default: at most 8 shown, 4 per row)."""
        if not self._data:
            raise ValueError("no frames collected yet")
        every = every or max(1, -(-len(self) // MAX_TILES))
        shown = -(-len(self) // every)
        return montage(self.source, self, every=every, max_side=max_side, columns=columns or min(shown, 4))

    def _describe(self) -> Description:
        counts = self.frame_counts()
        hw = self.frame_hw
        rows = []
        for i in self.obj_ids:
            present = [f for f in self.frames if i in self._data[f][0] and self.mask(f, i).any()]
            rows.append([i, counts[i], present[0] if present else "-", present[-1] if present else "-"])
        return Description(
            "TrackResult",
            {"frames collected": len(self), "frames in stack": self.num_frames, "objects": len(counts),
             "size (w x h)": "-" if hw is None else f"{hw[1]} x {hw[0]}"},
            (["object", "frames with mask", "first", "last"], rows),
            self.render() if self._data else None)

    def _repr_html_(self) -> str:
        return self._describe()._repr_html_()

    def _repr_png_(self) -> bytes | None:
        return self._describe()._repr_png_()

    def __repr__(self) -> str:
        return f"TrackResult({len(self)} frames, objects={self.obj_ids})"


class AutoMasks(list):
    """``generate``'s list of mask dicts, plus the ``image`` it came from (for display)."""

    def __init__(self, annotations: Iterable[dict[str, Any]] = (), image: Any = None) -> None:
        super().__init__(annotations)
        self.image = image

    def labels(self) -> np.ndarray:
        """(H, W) uint32 label image: mask i -> label i + 1 (later, smaller masks on top)."""
        if not self:
            if self.image is None:
                raise ValueError("no masks and no image: the label image's size is unknown")
            return np.zeros(np.asarray(self.image).shape[:2], np.uint32)
        seg = self[0]["segmentation"]
        size = tuple(seg["size"]) if isinstance(seg, dict) else np.asarray(seg).shape
        return labels_from_annotations(self, size)

    def render(self, max_side: int | None = None) -> np.ndarray:
        """Every mask over the image (HxWx3 uint8)."""
        return overlay(self.image, list(self) if self else None, max_side=max_side)

    def _describe(self, image: Any = None) -> Description:
        return describe_automasks(self, self.image if image is None else image)

    def _repr_html_(self) -> str:
        return self._describe()._repr_html_()

    def _repr_png_(self) -> bytes | None:
        return self._describe()._repr_png_()

    def __repr__(self) -> str:
        return f"AutoMasks({len(self)} masks)"


class Predictions(list):
    """A list of ``Prediction`` (one per prompted object), plus the ``image`` they belong to."""

    def __init__(self, predictions: Iterable[Any] = (), image: Any = None) -> None:
        super().__init__(predictions)
        self.image = image

    def render(self, max_side: int | None = None) -> np.ndarray:
        """Every prediction's best mask over the image, object i in colour i + 1."""
        masks = np.stack([p.masks[p.best] for p in self]) if self else None
        return overlay(self.image, masks, max_side=max_side)

    def _describe(self, image: Any = None) -> Description:
        return describe_predictions(self, self.image if image is None else image)

    def _repr_html_(self) -> str:
        return self._describe()._repr_html_()

    def _repr_png_(self) -> bytes | None:
        return self._describe()._repr_png_()

    def __repr__(self) -> str:
        return f"Predictions({len(self)} objects)"


def _is_prediction(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("masks", "scores", "logits", "object_score"))


def collect(results: Any, image: Any = None, frames: Any = None) -> Any:
    """Wrap results for display and tables.

    - ``session.propagate(...)`` (or any iterable of (frame, obj_ids, masks)) -> ``TrackResult``
      (``frames``: the session or its frames, shown under the masks);
    - ``gen.generate(image)`` -> ``AutoMasks`` (pass the ``image``);
    - ``pred.predict_batch(...)`` -> ``Predictions`` (pass the ``image``).
    To keep the frames done before an interrupt, collect into an existing result instead:
    ``track = ek.TrackResult(session); track.extend(session.propagate())``.
    """
    if isinstance(results, (AutoMasks, Predictions, TrackResult)):
        return results
    if isinstance(results, list) and all(isinstance(a, dict) and "segmentation" in a for a in results):
        return AutoMasks(results, image=image)
    if isinstance(results, list) and results and all(_is_prediction(p) for p in results):
        return Predictions(results, image=image)
    if isinstance(results, (str, bytes, dict, np.ndarray)) or not isinstance(results, Iterable):
        raise TypeError("collect takes session.propagate(...), gen.generate(image) or pred.predict_batch(...) results, "
                        f"got {type(results).__name__}")
    return TrackResult(frames).extend(results)
