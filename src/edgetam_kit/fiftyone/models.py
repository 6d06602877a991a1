"""``fiftyone.core.models.Model`` implementations over the engine, for ``dataset.apply_model``.

    model = EdgeTamImageModel(checkpoint="path/or/name", device="cpu")
    dataset.apply_model(model, label_field="masks", prompt_field="ground_truth")

    video = EdgeTamVideoModel(checkpoint="path/or/name")
    videos.apply_model(video, label_field="tracks", prompt_field="frames.prompts")

Outputs are ``fo.Detections``: one detection per object whose mask is not empty, its box the
mask's pixel bounds, ``mask`` cropped to that box, ``confidence`` the predicted IoU, ``label``
and ``index`` carried over from the prompt (tracks keep their ``index``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fiftyone.core.models import Model, SamplesMixin

from ..engine.automask import AutoMaskGenerator
from ..io.checkpoint import load_model
from ..modeling import EdgeTam
from ..engine.predictor import ImagePredictor
from ..engine.tracking import VideoTracker
from .checks import resolve_device
from .labels import ObjectPrompt, detection_from_mask, prompts_from_label, segmentation_from_masks

logger = logging.getLogger(__name__)
MODES = ("prompted", "auto")
OUTPUTS = ("detections", "segmentation", "both")


@dataclass
class Segment:
    """One output object: full-image (H, W) bool mask, predicted IoU (None if unknown), prompt."""

    mask: np.ndarray
    score: float | None
    prompt: ObjectPrompt | None = None


@dataclass
class ImageModelConfig:
    """Settings of ``EdgeTamImageModel`` (``auto`` holds AutoMaskGenerator keyword arguments)."""

    checkpoint: str
    device: str = "auto"
    mode: str = "prompted"
    prompt_field: str | None = None
    output: str = "detections"
    auto_label: str = "object"
    auto: dict[str, Any] = field(default_factory=dict)


def _load(checkpoint: Any, device: str, model: EdgeTam | None) -> EdgeTam:
    if model is not None:
        if not isinstance(model, EdgeTam):
            raise TypeError(f"model must be an EdgeTam from ek.load_model, got {type(model).__name__}")
        return model
    if checkpoint is None or (isinstance(checkpoint, str) and not checkpoint.strip()):
        raise ValueError("checkpoint must be a checkpoint name, a path or a hub id, got nothing")
    return load_model(checkpoint, device=resolve_device(device))


_CACHE: dict[tuple, EdgeTam] = {}


def cached_model(checkpoint: Any, device: str = "auto") -> EdgeTam:
    """``ek.load_model(checkpoint, device)``, kept for the next call with the same checkpoint
    (path and modification time) and device: the operators load a model per run, and loading
    prepares the runtime (seconds). Only the last two models are kept. ``device`` "auto": CUDA
    when this machine has it, else CPU."""
    device = resolve_device(device)
    path = os.path.expanduser(str(checkpoint))
    stamp = os.path.getmtime(path) if os.path.exists(path) else None
    key = (path, stamp, str(device))
    if key not in _CACHE:
        model = _load(checkpoint, device, None)
        while len(_CACHE) >= 2:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = model
    return _CACHE[key]


def _prompt_field(needs_fields: dict[str, str], default: str | None) -> str | None:
    return needs_fields.get("prompt_field") or default


def to_detections(segments: Sequence[Segment], default_label: str | None = None):
    """Segments -> fo.Detections (empty masks dropped)."""
    import fiftyone as fo

    dets = []
    for seg in segments:
        p = seg.prompt
        det = detection_from_mask(seg.mask, label=p.label if p and p.label is not None else default_label,
                                  confidence=seg.score, index=p.index if p else None)
        if det is not None:
            dets.append(det)
    return fo.Detections(detections=dets)


class _EdgeTamFiftyOneModel(Model, SamplesMixin):
    """What FiftyOne asks of both models: no FiftyOne-side batching, transforms or
    preprocessing (the engine takes lists of images of any size itself), and the prompt field
    from ``apply_model(prompt_field=...)`` or the config."""

    @property
    def ragged_batches(self) -> bool:
        return False

    @property
    def transforms(self) -> None:
        return None

    @property
    def preprocess(self) -> bool:
        return False

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        pass

    @property
    def prompt_field(self) -> str | None:
        return _prompt_field(self.needs_fields, self.config.prompt_field)


class EdgeTamImageModel(_EdgeTamFiftyOneModel):
    """Prompted (boxes/keypoints from ``prompt_field``) or automatic masks for image samples.

    checkpoint: what ``ek.load_model`` takes (name, HF folder, edgetam.pt, hub id); device: "auto"
    (CUDA when present, else CPU), "cpu", "cuda", "cuda:N" or "mps"; mode: "prompted" or "auto";
    prompt_field: default prompt field (apply_model's ``prompt_field=`` wins); in mode "prompted"
    with no prompt field at all, each image gets automatic masks instead (as FiftyOne's SAM 2
    model does), with the ``auto`` options; output: "detections", "segmentation" (uint16 label image, object i =
    i + 1) or "both" (a dict -> fields ``<label_field>_detections`` / ``_segmentation``);
    auto: AutoMaskGenerator options for mode "auto"; model: an already loaded EdgeTam instead
    of ``checkpoint``.
    """

    def __init__(self, checkpoint: Any = None, device: str = "auto", mode: str = "prompted",
                 prompt_field: str | None = None, output: str = "detections", auto: dict | None = None,
                 auto_label: str = "object", model: EdgeTam | None = None) -> None:
        SamplesMixin.__init__(self)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.config = ImageModelConfig(str(checkpoint), device, mode, prompt_field, output, auto_label,
                                       dict(auto or {}))
        self.model = _load(checkpoint, device, model)
        self.predictor = ImagePredictor(self.model)
        self.generator = AutoMaskGenerator(self.model, **self.config.auto) if mode == "auto" else None
        self._warned_auto = False

    # --- fiftyone.core.models.Model interface
    @property
    def media_type(self) -> str:
        return "image"

    def predict(self, arg: np.ndarray, sample: Any = None):
        return self.predict_all([arg], [sample])[0]

    def predict_all(self, args: Sequence[np.ndarray], samples: Sequence[Any] | None = None) -> list[Any]:
        """Images (H, W[, C]) and their samples -> one label (or dict of labels) per image."""
        images = [np.asarray(a) for a in args]
        samples = list(samples) if samples is not None else [None] * len(images)
        field_name = self.prompt_field
        if self.config.mode == "auto" or field_name is None:
            if self.config.mode != "auto" and not self._warned_auto:
                logger.info("EdgeTamImageModel: no prompt_field given, so automatic masks are made for "
                            "each image (pass apply_model(..., prompt_field=...) for prompted masks)")
                self._warned_auto = True
            segs = [self.segment_auto(img) for img in images]
        else:
            prompts = []
            for img, sample in zip(images, samples):
                label = None if sample is None else sample.get_field(field_name)
                prompts.append(prompts_from_label(label, img.shape[:2], "prompt_field"))
            segs = self.segment_prompted(images, prompts)
        return [self.to_labels(s, img.shape[:2]) for s, img in zip(segs, images)]

    # --- engine calls (used by the operators too)
    def segment_prompted(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[ObjectPrompt]]
                         ) -> list[list[Segment]]:
        """Masks for each image's prompts, in prompt order; the images with prompts are encoded in
        one network call (FiftyOne's ``batch_size`` is the device batch).
        A single click takes the best of 3 candidates (predicted IoU); boxes/several points give one."""
        out: list[list[Segment | None]] = [[None] * len(p) for p in prompts]
        todo = [(i, j) for i, ps in enumerate(prompts) for j in range(len(ps))]
        if not todo:
            return [[] for _ in prompts]
        used = sorted({i for i, _ in todo})
        self.predictor.set_images([images[i] for i in used], batch_size=len(used))  # FiftyOne's batch: one call
        slot = {i: k for k, i in enumerate(used)}
        for multimask in (True, False):
            group = [(i, j) for i, j in todo if prompts[i][j].single_click == multimask]
            if not group:
                continue
            objs = [prompts[i][j] for i, j in group]
            preds = self.predictor.predict_batch(
                points=[o.points for o in objs], labels=[None if o.points is None else [1] * len(o.points)
                                                         for o in objs],
                boxes=[o.box for o in objs], multimask=multimask, image_index=[slot[i] for i, _ in group])
            for (i, j), pred in zip(group, preds):
                k = pred.best if multimask else 0
                out[i][j] = Segment(pred.masks[k], float(pred.scores[k]), prompts[i][j])
        self.predictor.reset()
        return [list(s) for s in out]

    def segment_auto(self, image: np.ndarray) -> list[Segment]:
        """Automatic masks for one image, largest first."""
        if self.generator is None:
            self.generator = AutoMaskGenerator(self.model, **self.config.auto)
        anns = self.generator.generate(image)
        return [Segment(np.asarray(a["segmentation"], bool), float(a["predicted_iou"]),
                        ObjectPrompt(label=self.config.auto_label)) for a in anns]

    def to_labels(self, segments: Sequence[Segment], hw: tuple[int, int]):
        """Segments -> fo.Detections, fo.Segmentation, or both (per ``output``)."""
        out = self.config.output
        if out == "detections":
            return to_detections(segments)
        seg = segmentation_from_masks([s.mask for s in segments], hw)
        return seg if out == "segmentation" else {"detections": to_detections(segments), "segmentation": seg}


# ----------------------------------------------------------------------------------------- video
@dataclass
class VideoPrompts:
    """Prompts of one video: per 0-based frame index, the objects prompted there (with obj ids)."""

    by_frame: dict[int, list[tuple[int, ObjectPrompt]]]
    labels: dict[int, str | None]  # obj id -> label carried over


def video_prompts(frames: Iterator[tuple[int, Any]], field_name: str, hw: tuple[int, int]) -> VideoPrompts:
    """(frame_number 1-based, label) pairs -> VideoPrompts. A prompt's ``index`` is its object id
    (the same index on several frames = one object prompted several times); prompts without an
    index get new ids above every index used."""
    by_frame: dict[int, list[tuple[int, ObjectPrompt]]] = {}
    pending: list[tuple[int, ObjectPrompt]] = []
    labels: dict[int, str | None] = {}
    for number, label in frames:
        for p in prompts_from_label(label, hw, "prompt_field"):
            if p.index is None:
                pending.append((number - 1, p))
            else:
                by_frame.setdefault(number - 1, []).append((int(p.index), p))
                labels.setdefault(int(p.index), p.label)
    next_id = max(labels, default=0) + 1
    for frame, p in pending:
        p.index = next_id
        by_frame.setdefault(frame, []).append((next_id, p))
        labels[next_id] = p.label
        next_id += 1
    return VideoPrompts(dict(sorted(by_frame.items())), labels)


def frame_prompts_of(sample: Any, frame_field: str) -> Iterator[tuple[int, Any]]:
    """(frame_number, label) of a video sample's frames that hold ``frame_field``."""
    for number, frame in sample.frames.items():
        label = frame.get_field(frame_field) if frame.has_field(frame_field) else None
        if label is not None:
            yield number, label


def strip_frames(field_name: str | None, what: str = "prompt_field") -> str:
    if not field_name or not field_name.startswith("frames."):
        raise ValueError(f"{what} must be a frame field 'frames.<name>' holding Detections or Keypoints, "
                         f"got {field_name!r}")
    return field_name[len("frames."):]


class EdgeTamVideoModel(_EdgeTamFiftyOneModel):
    """Tracks the objects prompted on any frames of each video, both directions.

    checkpoint / device / model: as ``EdgeTamImageModel`` (the checkpoint must hold the video
    modules); prompt_field: default ``frames.<field>`` of prompts; tracker: VideoTracker options.
    ``predict`` returns ``{frame_number: fo.Detections}`` for every frame, so apply_model writes
    ``frames.<label_field>`` (give label_field without the ``frames.`` prefix).
    """

    def __init__(self, checkpoint: Any = None, device: str = "auto", prompt_field: str | None = None,
                 tracker: dict | None = None, model: EdgeTam | None = None) -> None:
        SamplesMixin.__init__(self)
        self.config = ImageModelConfig(str(checkpoint), device, "prompted", prompt_field)
        self.model = _load(checkpoint, device, model)
        if not self.model.has_video:
            raise ValueError(f"checkpoint {checkpoint!r} holds the image model only; tracking needs a "
                             "checkpoint with the video modules (e.g. the original edgetam.pt)")
        self.tracker = VideoTracker(self.model, **(tracker or {}))

    @property
    def media_type(self) -> str:
        return "video"

    def predict(self, arg: Any, sample: Any = None) -> dict[int, Any]:
        """``arg``: FiftyOne's video reader (only its path is used) or a path; ``sample`` gives prompts."""
        if sample is None:
            raise ValueError("EdgeTamVideoModel needs the sample (its frames hold the prompts)")
        path = getattr(arg, "inpath", None) or (arg if isinstance(arg, str) else sample.filepath)
        return dict(self.track(path, sample))

    def track(self, path: str, sample: Any, progress: Callable | None = None, cancel: Any = None
              ) -> Iterator[tuple[int, Any]]:
        """Yield ``(frame_number, fo.Detections)`` for every frame of the video (1-based numbers),
        forward from the first prompted frame to the end, then backward to frame 1."""
        import fiftyone as fo

        field_name = strip_frames(self.prompt_field)
        session = self.tracker.start(path)
        prompts = video_prompts(frame_prompts_of(sample, field_name), field_name=field_name,
                                hw=session.frame_hw)
        if not prompts.by_frame:
            for i in range(session.num_frames):
                yield i + 1, fo.Detections()
            return
        scores: dict[tuple[int, int], float] = {}
        for frame, objs in prompts.by_frame.items():
            if frame >= session.num_frames:
                raise ValueError(f"prompt on frame {frame + 1}, but the video has {session.num_frames} frames")
            for obj_id, p in objs:
                labels = None if p.points is None else [1] * len(p.points)
                r = session.add_prompt(frame, obj_id, points=p.points, labels=labels, box=p.box)
                scores[(frame, obj_id)] = r.score
        for frame, obj_ids, masks in session.propagate("both", progress=progress, cancel=cancel):
            segs = [Segment(m, scores.get((frame, o)), ObjectPrompt(label=prompts.labels.get(o), index=o))
                    for o, m in zip(obj_ids, masks)]
            yield frame + 1, to_detections(segs)
