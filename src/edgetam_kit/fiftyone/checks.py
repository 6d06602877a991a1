"""Checks made before a run touches the first sample: output field types, the target's media,
the checkpoint, the device. Each failure is a ValueError whose first word names the parameter.

Device rules (scale-out): ``check_device_name`` only checks the spelling, so an App on a CPU host
can queue ``cuda`` work; ``resolve_device`` runs where the samples are processed (the worker, or
the App server for an immediate run) and turns ``"auto"`` into ``cuda`` when that machine has it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

DEVICE_FORM = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
OURS = "edgetam_kit"  # key in a field's ``info`` marking our outputs (kept out of the prompt choices)


# ----------------------------------------------------------------------------- device
def check_device_name(device: Any) -> str:
    """The spelling of ``device`` ('auto' when empty); availability is checked by resolve_device."""
    if device is None or (isinstance(device, str) and not device.strip()):
        return "auto"
    if not isinstance(device, str) or not _DEVICE_RE.match(device.strip()):
        raise ValueError(f"device must be one of {DEVICE_FORM}, got {device!r}")
    return device.strip()


def resolve_device(device: Any) -> str:
    """The torch device to run on HERE: 'auto' -> 'cuda' when this machine has CUDA, else 'cpu';
    an explicit device is checked against this machine (ValueError naming ``device``)."""
    import torch

    device = check_device_name(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but this machine has no CUDA; use device='auto' "
                             "(CUDA when present, else CPU) or run it on a GPU worker")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' asked for, but this PyTorch has no usable MPS (Apple GPU) backend; "
                         "use device='auto' or 'cpu'")
    return device


def cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- output fields
def field_kind(field: Any) -> str:
    """'Detections', 'Classification', 'ImageMetadata', 'StringField', ... of a FiftyOne field."""
    doc = getattr(field, "document_type", None)
    return doc.__name__ if doc is not None else type(field).__name__


def check_output_field(collection: Any, label_field: str, kind: str = "Detections", video: bool = False) -> None:
    """ValueError naming ``label_field`` when the field (``frames.<label_field>`` for videos) exists
    and does not hold ``kind`` labels: writing there would fail on the first sample."""
    path = f"frames.{label_field}" if video else label_field
    field = collection.get_field(path)
    if field is None:
        return
    have = field_kind(field)
    if have != kind:
        raise ValueError(f"label_field {path!r} already holds {have}; this run writes {kind} there: choose "
                         "another label_field (or delete that field)")


def mark_ours(collection: Any, path: str, operator: str) -> None:
    """Note in the field's ``info`` that edgetam-kit wrote it (so it is not offered as prompts)."""
    dataset = getattr(collection, "_dataset", collection)
    field = dataset.get_field(path)
    if field is None or (field.info or {}).get(OURS):
        return
    field.info = {**(field.info or {}), OURS: operator}
    field.save()


def is_ours(field: Any) -> bool:
    return bool((getattr(field, "info", None) or {}).get(OURS))


# ----------------------------------------------------------------------------- targets
def check_target_media(view: Any, operator: str, video: bool) -> None:
    """ValueError naming ``target`` when the target collection's media do not fit the operator."""
    media = getattr(view, "media_type", None)
    if getattr(view, "_is_generated", False):
        raise ValueError(f"target: {operator} cannot write to a generated view (patches, frames or clips); "
                         "run it on the dataset or a filtered view of it")
    if video and media != "video":
        raise ValueError(f"target: {operator} tracks objects through videos; this target holds {media!r} samples")
    if not video and media != "image":
        raise ValueError(f"target: {operator} labels images; this target holds {media!r} samples"
                         + (" (use track_objects for videos)" if media == "video" else ""))


# ----------------------------------------------------------------------------- checkpoints
def check_checkpoint(checkpoint: str, video: bool) -> None:
    """Cheap checks of ``checkpoint`` without loading it: it exists (a path, a registered name or a
    hub id), an HF folder holds config.json + weights, and for tracking it has the video modules."""
    from ..io.checkpoint import resolve_source

    kind, path, spec = resolve_source(checkpoint)
    if kind == "missing":
        raise ValueError(f"checkpoint {checkpoint!r} is not an existing path, a registered name (edgetam, "
                         "edgetam-original) or a hub id (owner/name)")
    if spec is not None:
        local = Path(spec.source).expanduser()
        if local.exists():
            path = local / spec.filename if spec.filename else local
        else:
            path = _hub_cached(spec.source, spec.filename)
            if path is None:
                if env_flag("HF_HUB_OFFLINE"):
                    raise ValueError(f"checkpoint {checkpoint!r} is not in the local Hugging Face cache and "
                                     "HF_HUB_OFFLINE is set; give a local path")
                return  # fetched when the run starts
    stat = path.stat()
    has_video = _has_video(str(path), stat.st_mtime_ns, stat.st_size, checkpoint)
    if video and not has_video:
        raise ValueError(f"checkpoint {checkpoint!r} holds the image model only; tracking needs the video "
                         "modules (the original edgetam.pt, or a folder saved from a video model)")


def _hub_cached(repo_id: str, filename: str | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename or "config.json")
    if not isinstance(found, str):
        return None
    return Path(found) if filename else Path(found).parent


@functools.lru_cache(maxsize=16)
def _has_video(path: str, mtime_ns: int, size: int, name: str) -> bool:
    """Whether the checkpoint at ``path`` holds video-model tensors (read from the file's index only)."""
    from ..io.checkpoint_keys import is_video_key

    p = Path(path)
    if p.is_dir() or p.name == "config.json":
        folder = p if p.is_dir() else p.parent
        if not (folder / "config.json").is_file():
            raise ValueError(f"checkpoint {name!r}: folder {folder} has no config.json (an HF EdgeTAM folder "
                             "holds config.json + model.safetensors)")
        keys = _safetensors_keys(folder, name)
        return any(is_video_key(k, "hf") for k in keys)
    if p.suffix in (".pt", ".pth", ".ckpt"):
        import torch

        try:
            blob = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise ValueError(f"checkpoint {name!r}: cannot read {p} ({type(e).__name__}: {e})") from e
        sd = blob.get("model", blob) if isinstance(blob, dict) else {}
        return any(is_video_key(k, "original") for k in sd)
    raise ValueError(f"checkpoint {name!r}: {p} is neither an HF folder nor an edgetam.pt file")


def _safetensors_keys(folder: Path, name: str) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text()).get("weight_map", {}))
    file = folder / "model.safetensors"
    if not file.is_file():
        raise ValueError(f"checkpoint {name!r}: folder {folder} has no model.safetensors")
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"checkpoint {name!r}: {file} is truncated")
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(f.read(n))
        except (ValueError, MemoryError) as e:
            raise ValueError(f"checkpoint {name!r}: {file} has no valid safetensors header") from e
    return [k for k in header if k != "__metadata__"]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
