"""VideoTracker: prompt objects on any frame of a stack or video, then propagate them.

Memory is bounded (DESIGN.md §4). Per object the session keeps its prompted
(conditioning) frames, the memories of the last ``max_memory_frames - 1`` frames it
tracked, the last ``max_object_pointers`` object pointers, and the memories/pointers of
tracked frames within that reach of a prompted frame (so a pass in the other direction
from a prompt sees what the references see) — nothing that grows with the source. Frames
are read from the source when needed and dropped; results are yielded, never stored.

Coordinates are (x, y) pixels of the frame as given; boxes (x0, y0, x1, y1); masks bool.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling import EdgeTam, ImageFeatures
from ..modeling.edgetam import TrackOutput
from .memory_bank import FrameMemory, ObjectState, bank_inputs
from .prompts import PromptParser
from ..progress import Cancelled, check_progress_cancel, is_cancelled, report
from ..io.labels import MAX_LABEL, paint_labels
from ..io.plugin_guard import read_frame
from ..io.sources import FrameSource, open_source
from ..transforms import (DEFAULT_PERCENTILES, check_channels, check_percentiles, to_model_input, to_unit_rgb,
                          upscale_logits)
from ..runtime import FramePrefix, Runtime, runtime_of

DIRECTIONS = ("forward", "backward", "both")


@dataclass
class PromptResult:
    """The object's mask on the prompted frame: mask (H, W) bool, predicted IoU, object score."""

    mask: np.ndarray
    score: float
    object_score: float


class VideoTracker:
    """Tracks objects through frame sources with a bounded memory bank."""

    def __init__(self, model: EdgeTam, max_memory_frames: int | None = None,
                 max_conditioning_frames: int | None = None,
                 percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
                 channels: int | Sequence[int] | None = None) -> None:
        if not isinstance(model, EdgeTam):
            raise TypeError(f"model must be an EdgeTam from ek.load_model, got {type(model).__name__}")
        model._require_video()
        n = model.config.memory.num_maskmem
        max_memory_frames = n if max_memory_frames is None else max_memory_frames
        if isinstance(max_memory_frames, bool) or not isinstance(max_memory_frames, int) \
                or not 1 <= max_memory_frames <= n:
            raise ValueError(f"max_memory_frames must be an int in [1, {n}], got {max_memory_frames!r}")
        if max_conditioning_frames is not None and (isinstance(max_conditioning_frames, bool) or
                                                    not isinstance(max_conditioning_frames, int) or
                                                    max_conditioning_frames < 1):
            raise ValueError(f"max_conditioning_frames must be None or an int >= 1, got {max_conditioning_frames!r}")
        check_channels(channels)
        self.model = model.eval()
        self.max_memory_frames = max_memory_frames
        self.max_conditioning_frames = max_conditioning_frames
        self.percentiles = check_percentiles(percentiles)
        self.channels = channels

    def start(self, frames: Any) -> "TrackingSession":
        """Open ``frames`` — an array (T, H, W[, C]), dask/zarr array, image folder, TIFF
        stack, video file or FrameSource — and return a session over it."""
        return TrackingSession(self, open_source(frames))


class TrackingSession:
    """Prompts and memory for one source. Create with ``VideoTracker.start``."""

    def __init__(self, tracker: VideoTracker, source: FrameSource) -> None:
        self.tracker = tracker
        self.model = tracker.model
        self.source = source
        shape = tuple(source.shape)
        if len(shape) < 3 or len(source) == 0:
            raise ValueError(f"frames must hold at least one frame shaped (H, W[, C]), got shape {shape}")
        self.num_frames = len(source)
        self.frame_hw = (int(shape[1]), int(shape[2]))
        self.objects: dict[int, ObjectState] = {}
        self._cache: tuple[int, ImageFeatures] | None = None  # the last encoded frame only
        self._rt: Runtime = runtime_of(self.model)  # the runtime of the memory in the bank
        self._source_lock = threading.Lock()

    # ------------------------------------------------------------------ prompts
    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)

    def add_prompt(self, frame: int, obj_id: int, points: Any = None, labels: Any = None, box: Any = None,
                   mask: Any = None) -> PromptResult:
        """Prompt ``obj_id`` on ``frame`` (replacing any earlier prompt of that object there).

        points (P, 2) (x, y) pixels with labels (P,) 1/0 (default 1), box (4,), or mask (H, W)
        bool. The frame becomes a conditioning frame of the object; frames tracked before are
        recomputed by the next propagate.
        """
        frame = self._check_frame(frame, "frame")
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise TypeError(f"obj_id must be an int, got {obj_id!r}")
        obj_id = int(obj_id)
        if not 0 <= obj_id <= MAX_LABEL:
            raise ValueError(f"obj_id must be an int in [0, {MAX_LABEL}] (it is the object's value in uint32 label "
                             f"images), got {obj_id}")
        coords, labs, mask_t = self._prompt_tensors(points, labels, box, mask)
        state = self.objects.get(obj_id) or ObjectState(obj_id)
        rt = self._runtime()
        with rt.inference():
            feats = self._features(frame)
            if mask_t is not None:
                out = rt.mask_as_output(feats.embed, feats.high_res, mask_t)
            else:
                correcting = frame in state.corrected or (frame in state.tracked and frame not in state.conditioning)
                prev = None
                if correcting:
                    if frame not in state.corrected:
                        old = state.memory_at(frame)
                        state.corrected[frame] = None if old is None else old.low_res
                    held = state.corrected[frame]
                    prev = None if held is None else held[None].clamp(-32.0, 32.0)
                conditioned = self._condition(state, frame, feats.embed, reverse=False,
                                              exclude=frame if correcting else None) if correcting \
                    else rt.condition(feats.embed, None, None, 0, 0)
                multimask = len(labs[0]) <= 1
                out = rt.track_decode(conditioned, feats.high_res, coords, labs, prev, multimask)
            mem = self._memories(feats.embed, out, binarize=True)[0]
        state.conditioning[frame] = mem
        for store in (state.recent, state.pointers, state.anchored, state.anchored_pointers):
            store.pop(frame, None)
        self.objects[obj_id] = state
        masks = self._to_masks(out.low_res_logits)
        return PromptResult(masks[0], float(out.iou[0]), float(out.object_score[0]))

    def remove_object(self, obj_id: int) -> None:
        if obj_id not in self.objects:
            raise ValueError(f"obj_id {obj_id!r} is not tracked; known: {self.obj_ids}")
        del self.objects[obj_id]

    def reset(self) -> None:
        """Drop every prompt and all memory; keep the source."""
        self.objects.clear()
        self._cache = None

    # ------------------------------------------------------------------ propagation
    def propagate(self, direction: str = "forward", start: int | None = None, stop: int | None = None,
                  progress: Any = None, cancel: Any = None) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """Yield (frame_index, obj_ids, masks (n_obj, H, W) bool) frame by frame.

        forward: from ``start`` (default: the earliest prompted frame) up to ``stop``
        (inclusive, default: the last frame). backward: from ``start`` (default: the latest
        prompted frame) down to ``stop`` (default 0). both: forward from ``start`` (default:
        earliest prompted frame), then backward from the frame before it, each frame once.
        ``cancel`` (callable or Event) is checked between frames; when set, ``Cancelled`` is
        raised after the last complete frame and the session stays usable.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        check_progress_cancel(progress, cancel)
        if not self.objects:
            raise ValueError("propagate needs at least one prompt: call add_prompt(frame, obj_id, ...) first")
        prompted = sorted({f for s in self.objects.values() for f in s.conditioning})
        start = None if start is None else self._check_frame(start, "start")
        stop = None if stop is None else self._check_frame(stop, "stop")
        last = self.num_frames - 1
        if direction == "forward":
            begin = prompted[0] if start is None else start
            end = last if stop is None else stop
            if end < begin:
                raise ValueError(f"stop ({end}) must be >= start ({begin}) for direction='forward'")
            plan = [(f, False) for f in range(begin, end + 1)]
        elif direction == "backward":
            begin = prompted[-1] if start is None else start
            end = 0 if stop is None else stop
            if end > begin:
                raise ValueError(f"stop ({end}) must be <= start ({begin}) for direction='backward'")
            plan = [(f, True) for f in range(begin, end - 1, -1)]
        else:
            if stop is not None:
                raise ValueError("stop is not used with direction='both'; propagate twice to bound a range")
            begin = prompted[0] if start is None else start
            plan = [(f, False) for f in range(begin, last + 1)] + [(f, True) for f in range(begin - 1, -1, -1)]
        return self._run(plan, progress, cancel)

    def _run(self, plan: list[tuple[int, bool]], progress: Any, cancel: Any) -> Iterator[tuple[int, list[int], np.ndarray]]:
        # The next frame is read and normalised in a helper thread while this one is tracked
        # (file reading and video decoding overlap the model); one frame ahead at most.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgetam-prefetch") as pool:
            ahead: tuple[int, Future] | None = None
            try:
                for done, (frame, reverse) in enumerate(plan):
                    if is_cancelled(cancel):
                        raise Cancelled(f"propagation cancelled after {done} of {len(plan)} frames; the session is intact")
                    if not self.objects:  # reset() or the last remove_object() inside the loop: nothing to track
                        return
                    pixels = None
                    if ahead is not None and ahead[0] == frame:
                        pixels = ahead[1].result()  # re-raises a read error at the frame it belongs to
                    elif self._cache is None or self._cache[0] != frame:
                        pixels = self._pixels(frame)
                    ahead = None
                    if done + 1 < len(plan) and (self._cache is None or self._cache[0] != plan[done + 1][0]):
                        nxt = plan[done + 1][0]
                        ahead = (nxt, pool.submit(self._pixels, nxt))
                    rt = self._runtime()
                    with rt.inference():
                        logits = self._track_frame(frame, reverse, pixels)
                    yield frame, self.obj_ids, self._to_masks(logits)
                    report(progress, done + 1, len(plan))
            finally:
                if ahead is not None:
                    ahead[1].cancel()

    def _track_frame(self, frame: int, reverse: bool, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Track every object on ``frame``; returns low-res logits (n_obj, 1, 4E, 4E).
        pixels: the frame's model input when already prepared (``_pixels``).

        The objects whose banks give memory of the same layout (number of memory frames and of
        pointer tokens: e.g. objects prompted on the same frames) go through memory attention,
        the decoder and the memory encoder as one batch; each gets the result it gets alone,
        up to float rounding. The frame's memory-independent prefix is computed once."""
        feats = self._features(frame, pixels)
        rt = self._rt
        tracked = [s for s in self.objects.values() if frame not in s.conditioning]
        prefix = rt.condition_prefix(feats.embed) if len(tracked) > 1 else None
        banks = {s.obj_id: bank_inputs(s, frame, reverse, None, self.model, self.tracker.max_memory_frames,
                                       self.tracker.max_conditioning_frames, self.num_frames) for s in tracked}
        groups: dict[tuple[int, int], list[ObjectState]] = {}
        for s in tracked:
            groups.setdefault((banks[s.obj_id].num_frames, banks[s.obj_id].num_pointer_tokens), []).append(s)
        low_res: dict[int, torch.Tensor] = {}
        for (num_frames, num_pointers), states in groups.items():
            b = len(states)
            memory = torch.cat([banks[s.obj_id].memory for s in states])
            memory_pos = torch.cat([banks[s.obj_id].memory_pos for s in states])
            raw = feats.embed.expand(b, -1, -1, -1)
            conditioned = rt.condition(raw, memory, memory_pos, num_frames, num_pointers, prefix=prefix)
            high_res = tuple(h.expand(b, -1, -1, -1) for h in feats.high_res)
            res = rt.track_decode(conditioned, high_res, None, None, None, multimask=True)
            for state, mem in zip(states, self._memories(raw, res, binarize=False)):
                state.remember(frame, mem, self.tracker.max_memory_frames - 1,
                               self.model.config.memory.max_object_pointers)
                state.tracked.add(frame)
                low_res[state.obj_id] = mem.low_res
        return torch.stack([s.conditioning[frame].low_res if frame in s.conditioning else low_res[s.obj_id]
                            for s in self.objects.values()])

    # ------------------------------------------------------------------ memory
    def _condition(self, state: ObjectState, frame: int, raw: torch.Tensor, reverse: bool,
                   exclude: int | None = None, prefix: FramePrefix | None = None) -> torch.Tensor:
        """Memory-attend ``raw`` (1, C, E, E) to the object's bank as seen from ``frame``
        (prefix: ``Runtime.condition_prefix(raw)``, when several objects share the frame)."""
        bank = bank_inputs(state, frame, reverse, exclude, self.model, self.tracker.max_memory_frames,
                           self.tracker.max_conditioning_frames, self.num_frames)
        return self._rt.condition(raw, bank.memory, bank.memory_pos, bank.num_frames, bank.num_pointer_tokens,
                                  prefix=prefix)

    def _memories(self, raw: torch.Tensor, out: TrackOutput, binarize: bool) -> list[FrameMemory]:
        """One ``FrameMemory`` per object of ``out`` (B objects on one frame; raw (B, C, E, E))."""
        tokens, pos = self._rt.encode_memory(raw, out.high_res_logits, binarize, out.object_score)
        scores = out.object_score.float().tolist()
        return [FrameMemory(tokens[i], pos[i], out.pointer[i], out.low_res_logits[i], scores[i])
                for i in range(len(scores))]

    # ------------------------------------------------------------------ helpers
    def _runtime(self) -> Runtime:
        """The model's runtime (rebuilt by ``runtime_of`` when the weights changed); the features of
        the last encoded frame belong to the runtime that made them and are dropped with it."""
        rt = runtime_of(self.model, quick=True)
        if rt is not self._rt:
            self._rt, self._cache = rt, None
        return rt

    def _features(self, frame: int, pixels: torch.Tensor | None = None) -> ImageFeatures:
        if self._cache is not None and self._cache[0] == frame:
            return self._cache[1]
        if pixels is None:
            pixels = self._pixels(frame)
        feats = self._rt.encode_image(pixels, add_no_memory=False)
        self._cache = (frame, feats)
        return feats

    def _pixels(self, frame: int) -> torch.Tensor:
        """Frame ``frame`` read from the source and normalised: (1, 3, S, S) model input."""
        m = self.model
        with self._source_lock:  # the prefetch thread and the caller may both read
            image = read_frame(self.source, frame)  # a plugin source's failure names the plugin
        if tuple(image.shape[:2]) != self.frame_hw:
            raise ValueError(f"frame {frame} has shape {tuple(image.shape)}, but the source's frames are "
                             f"{self.frame_hw}; every frame must have the same size")
        rgb = to_unit_rgb(image, channels=self.tracker.channels, percentiles=self.tracker.percentiles,
                          name=f"frame {frame}", keep_uint8=True)  # uint8 is divided on the device
        return to_model_input(rgb, m.config.image_size, m.device, m.dtype)

    def _to_masks(self, low_res: torch.Tensor) -> np.ndarray:
        """(N, 1, 4E, 4E) logits -> (N, H, W) bool at the source's frame size."""
        return (upscale_logits(low_res, self.frame_hw)[:, 0] > 0).cpu().numpy()

    def _check_frame(self, frame: Any, name: str) -> int:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.num_frames:
            raise ValueError(f"{name} must be a frame index in [0, {self.num_frames - 1}], got {frame!r}")
        return int(frame)

    def _prompt_tensors(self, points: Any, labels: Any, box: Any, mask: Any):
        """Validated prompt as model-frame tensors: coords (1, P, 2), labels (1, P), mask (1, 1, S, S)."""
        hw, size, dev = self.frame_hw, self.model.config.image_size, self.model.device
        if mask is not None:
            if points is not None or box is not None:
                raise ValueError("give either mask or points/box for one prompt, not both")
            arr = np.asarray(mask)
            if arr.shape != hw:
                raise ValueError(f"mask must be shaped like a frame {hw} (H, W), got {arr.shape}")
            t = torch.from_numpy(arr.astype(np.float32))[None, None].to(dev)
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            return None, None, (t >= 0.5).to(self.model.dtype)
        if points is None and box is None:
            raise ValueError("add_prompt needs points, a box or a mask")
        prompt = PromptParser(size, self.model.config.low_res_size).parse(points, labels, box, None, hw)
        c = torch.from_numpy(prompt.coords)[None].to(dev, self.model.dtype)
        lab_t = torch.from_numpy(prompt.labels)[None].to(dev)
        return c, lab_t, None


@dataclass
class SlicePrompt:
    """A prompt for ``segment_volume``: object ``obj_id`` on slice (frame) ``frame``."""

    frame: int
    obj_id: int
    points: Any = None
    labels: Any = None
    box: Any = None
    mask: Any = None


def segment_volume(volume: Any, prompts: Sequence[SlicePrompt | dict], model: EdgeTam,
                   progress: Any = None, cancel: Any = None, **tracker_options: Any) -> np.ndarray:
    """Segment a z-stack or time-lapse (T, H, W[, C]) from prompts on one or more slices,
    propagating both ways from the earliest prompted slice.

    Returns a uint32 label volume (T, H, W): 0 is background, each object's pixels carry its
    obj_id (where objects overlap, the larger obj_id wins).
    """
    if not prompts:
        raise ValueError("prompts must hold at least one SlicePrompt (or dict with frame, obj_id, points/box/mask)")
    session = VideoTracker(model, **tracker_options).start(volume)
    for i, p in enumerate(prompts):
        if isinstance(p, dict):
            try:
                p = SlicePrompt(**p)
            except TypeError as exc:
                raise ValueError(f"prompts[{i}]: {exc}; keys are frame, obj_id, points, labels, box, mask") from None
        if not isinstance(p, SlicePrompt):
            raise TypeError(f"prompts[{i}] must be a SlicePrompt or a dict, got {type(p).__name__}")
        if isinstance(p.obj_id, bool) or not isinstance(p.obj_id, (int, np.integer)) \
                or not 1 <= int(p.obj_id) <= MAX_LABEL:
            raise ValueError(f"prompts[{i}].obj_id must be an int in [1, {MAX_LABEL}] (0 is background; labels are "
                             f"uint32), got {p.obj_id!r}")
        session.add_prompt(p.frame, p.obj_id, points=p.points, labels=p.labels, box=p.box, mask=p.mask)
    h, w = session.frame_hw
    labels = np.zeros((session.num_frames, h, w), np.uint32)
    for frame, obj_ids, masks in session.propagate("both", progress=progress, cancel=cancel):
        paint_labels(masks, obj_ids, out=labels[frame])
    return labels
