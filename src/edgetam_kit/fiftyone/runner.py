"""Resumable, shardable labelling runs over FiftyOne collections (what the operators call).

Every sample (every video) is saved as soon as its labels exist, so a run killed at any point
loses at most the sample in flight. With ``skip_existing`` a rerun does only the samples
without labels: images whose ``label_field`` is unset; videos where fewer frames than the
video has hold ``frames.<label_field>`` (a video cut off mid-save is redone and overwritten
frame by frame, never appended to). Only ``label_field`` (and mask files in ``output_dir``,
named deterministically) is written.

Sharding: sample ``s`` belongs to shard ``sha1(s.id) % num_shards`` — a partition of the ids
that does not depend on which samples are done yet (nor on how ids were allocated), so N workers given shards 0..N-1 of
one target never touch the same sample.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .checks import check_output_field, mark_ours
from .labels import write_masks
from .models import EdgeTamImageModel, EdgeTamVideoModel, strip_frames

Progress = Callable[[int, int], None]
Steps = Generator[tuple[int, int], None, "RunSummary"]  # yields (done, total), returns the summary
READ_CHUNK = 16  # samples fetched per database query (labels are still saved one sample at a time)
logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did: samples labelled now, skipped as already done, in its shard; masks (objects
    with a non-empty mask) written; frames labelled (videos); wall time in seconds."""

    processed: int
    skipped: int
    in_shard: int
    shard: int = 0
    num_shards: int = 1
    masks: int = 0
    frames: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        """Samples (images or videos) labelled per second."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["per_second"] = round(self.per_second, 3)
        return d


def check_shard(shard: Any, num_shards: Any) -> tuple[int, int]:
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be an int >= 1, got {num_shards!r}")
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < num_shards:
        raise ValueError(f"shard must be an int in [0, {num_shards - 1}], got {shard!r}")
    return shard, num_shards


def shard_of(sample_id: str, num_shards: int) -> int:
    """The shard of a sample id (an ObjectId hex string): a hash of it modulo ``num_shards``."""
    return int(hashlib.sha1(sample_id.encode()).hexdigest()[:12], 16) % num_shards


def shard_ids(collection: Any, shard: int = 0, num_shards: int = 1) -> list[str]:
    """Ids of ``collection``'s samples in ``shard``, in collection order."""
    check_shard(shard, num_shards)
    ids = collection.values("id")
    return ids if num_shards == 1 else [i for i in ids if shard_of(i, num_shards) == shard]


def check_label_field(collection: Any, label_field: Any, video: bool) -> str:
    if not isinstance(label_field, str) or not label_field.strip():
        raise ValueError(f"label_field must be a non-empty field name, got {label_field!r}")
    if label_field.startswith("frames."):
        raise ValueError(f"label_field must not start with 'frames.' (video labels are written to "
                         f"frames.<label_field> already), got {label_field!r}")
    if "." in label_field:
        raise ValueError(f"label_field must be a top-level field name without '.', got {label_field!r}")
    return label_field


def _batches(ids: Sequence[str], size: int):
    for i in range(0, len(ids), size):
        yield list(ids[i:i + size])


def run_steps(steps: Steps, progress: Progress | None = None) -> RunSummary:
    """Run a ``iter_label_*`` generator to its end, telling ``progress(done, total)`` each step."""
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        report(progress, done, total)


def _output_kinds(model: Any, label_field: str) -> dict[str, str]:
    out = getattr(getattr(model, "config", None), "output", "detections")
    if out == "both":
        return {f"{label_field}_detections": "Detections", f"{label_field}_segmentation": "Segmentation"}
    return {label_field: "Segmentation" if out == "segmentation" else "Detections"}


def label_images(collection: Any, model: EdgeTamImageModel, label_field: str, prompt_field: str | None = None,
                 output_dir: str | None = None, skip_existing: bool = True, batch_size: int = 1, shard: int = 0,
                 num_shards: int = 1, progress: Progress | None = None) -> RunSummary:
    """Label the image samples of ``collection`` (its shard) with ``model``, saving each sample.

    prompt_field: Detections/Keypoints field of prompts (mode "prompted"; default: the model's).
    batch_size: images encoded per ``set_images`` call; results are still saved per sample.
    Everything is validated before the first sample is read (an existing ``label_field`` must
    hold what the model writes). Returns a RunSummary.
    """
    return run_steps(iter_label_images(collection, model, label_field, prompt_field, output_dir, skip_existing,
                                       batch_size, shard, num_shards), progress)


def iter_label_images(collection: Any, model: EdgeTamImageModel, label_field: str, prompt_field: str | None = None,
                      output_dir: str | None = None, skip_existing: bool = True, batch_size: int = 1,
                      shard: int = 0, num_shards: int = 1) -> Steps:
    """``label_images`` as a generator: yields (done, total) after each saved sample and returns the
    RunSummary (``summary = yield from iter_label_images(...)``)."""
    import fiftyone.utils.image as foui

    t0 = time.perf_counter()
    check_label_field(collection, label_field, video=False)
    kinds = _output_kinds(model, label_field)
    for name, kind in kinds.items():
        check_output_field(collection, name, kind)
    if prompt_field is not None:
        model.needs_fields = {"prompt_field": prompt_field}
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    ids = shard_ids(collection, shard, num_shards)
    todo = _pending_images(collection, ids, label_field) if skip_existing else ids
    done = masks = 0
    yield 0, len(todo)
    for chunk in _batches(todo, max(batch_size, READ_CHUNK)):  # one read query per chunk
        views = list(collection.select(chunk, ordered=True))  # prompts as the target view shows them
        writable = list(collection._dataset.select(chunk, ordered=True))  # all fields, saved whole
        for start in range(0, len(chunk), batch_size):
            samples = views[start:start + batch_size]
            images = [foui.read(s.filepath) for s in samples]
            labels = model.predict_all(images, samples)
            for sample, label in zip(writable[start:start + batch_size], labels):
                if output_dir is not None:
                    dets = label.get("detections") if isinstance(label, dict) else label
                    if hasattr(dets, "detections"):
                        write_masks(dets.detections, Path(output_dir) / sample.id, "mask")
                _store(sample, label_field, label)
                sample.save()  # each sample as soon as it is done: a killed run loses at most this one
                masks += _count(label)
                done += 1
                yield done, len(todo)
    if done:
        for name in kinds:
            mark_ours(collection, name, "label_images")
    summary = RunSummary(done, len(ids) - len(todo), len(ids), shard, num_shards, masks=masks,
                         seconds=time.perf_counter() - t0)
    logger.info("label_images: %d images in %.1f s (%.2f images/s, batch_size=%d, reading and saving included)",
                done, summary.seconds, summary.per_second, batch_size)
    return summary


def _count(label: Any) -> int:
    dets = label.get("detections") if isinstance(label, dict) else label
    return len(getattr(dets, "detections", None) or []) if dets is not None else 0


def _store(sample: Any, label_field: str, label: Any) -> None:
    if isinstance(label, dict):  # output "both": <label_field>_detections, <label_field>_segmentation
        for key, value in label.items():
            sample.set_field(f"{label_field}_{key}", value)
    else:
        sample.set_field(label_field, label)


def _pending_images(collection: Any, ids: list[str], label_field: str) -> list[str]:
    if not collection.has_field(label_field):
        check = f"{label_field}_detections"
        if not collection.has_field(check):
            return ids
        label_field = check
    done = set(collection.exists(label_field).values("id"))
    return [i for i in ids if i not in done]


def label_videos(collection: Any, model: EdgeTamVideoModel, label_field: str, prompt_field: str | None = None,
                 output_dir: str | None = None, skip_existing: bool = True, shard: int = 0, num_shards: int = 1,
                 chunk: int = 32, progress: Progress | None = None) -> RunSummary:
    """Track the prompted objects of each video of ``collection`` (its shard) into
    ``frames.<label_field>``; frames are saved every ``chunk`` frames, each video is done once
    all its frames are written."""
    return run_steps(iter_label_videos(collection, model, label_field, prompt_field, output_dir, skip_existing,
                                       shard, num_shards, chunk), progress)


def iter_label_videos(collection: Any, model: EdgeTamVideoModel, label_field: str, prompt_field: str | None = None,
                      output_dir: str | None = None, skip_existing: bool = True, shard: int = 0,
                      num_shards: int = 1, chunk: int = 32) -> Steps:
    """``label_videos`` as a generator: yields (videos done, total) and returns the RunSummary."""
    from ..io.sources import open_source

    t0 = time.perf_counter()
    check_label_field(collection, label_field, video=True)
    check_output_field(collection, label_field, "Detections", video=True)
    if prompt_field is not None:
        model.needs_fields = {"prompt_field": prompt_field}
    prompt_field = strip_frames(model.prompt_field)
    ids = shard_ids(collection, shard, num_shards)
    frame_field = f"frames.{label_field}"
    todo = []
    for sid in ids:
        if skip_existing and collection.has_frame_field(label_field):
            n_done = collection.select(sid).count(frame_field)
            if n_done and n_done >= len(open_source(collection[sid].filepath)):
                continue
        todo.append(sid)
    yield 0, len(todo)
    masks = frames = 0
    for k, sid in enumerate(todo):
        sample = collection.select_fields(f"frames.{prompt_field}").select(sid).first() \
            if collection.has_frame_field(prompt_field) else collection[sid]
        full = collection._dataset[sid]
        pending = 0
        for number, dets in model.track(sample.filepath, sample):
            if output_dir is not None:
                write_masks(dets.detections, Path(output_dir) / sid, f"{number:06d}")
            full.frames[number][label_field] = dets
            masks += len(dets.detections)
            frames += 1
            pending += 1
            if pending >= chunk:
                full.save()
                pending = 0
        full.save()
        yield k + 1, len(todo)
    if todo:
        mark_ours(collection, f"frames.{label_field}", "label_videos")
    return RunSummary(len(todo), len(ids) - len(todo), len(ids), shard, num_shards, masks=masks, frames=frames,
                      seconds=time.perf_counter() - t0)


def report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
