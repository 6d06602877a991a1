"""The ``finetune`` operator's logic: its parameters (ValueError naming the parameter), the run
(``ek.finetune`` on the target view's Detections-with-masks field) as a generator of
``(done, total)`` steps that returns the result, and the registration of the written folder
(``registry``) so that the other operators offer it as a checkpoint.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import check_checkpoint, check_device_name, check_target_media, field_kind
from .params import DEFAULT_CHECKPOINT, TARGETS, _int, _str, default_target
from .registry import register_checkpoint

OPERATOR = "finetune"
TRAIN_MODES = ("decoder", "lora", "all")
KNOWN = ("checkpoint", "target", "mask_field", "train", "steps", "output_dir", "device", "delegate")
VIEW_ONLY = ("error", "notice")
OUT_ROOT = "edgetam-finetuned"  # default output folders: <FiftyOne's dataset dir>/edgetam-finetuned/<dataset>


@dataclass
class FinetuneParams:
    """Validated parameters of one ``finetune`` run (steps None: 10 epochs)."""

    checkpoint: str = DEFAULT_CHECKPOINT
    target: str = "DATASET"
    mask_field: str = ""
    train: str = "decoder"
    steps: int | None = None
    output_dir: str = ""
    device: str = "auto"


def mask_fields(collection: Any) -> list[str]:
    """The Detections fields of ``collection`` (those holding masks are what ``finetune`` reads)."""
    if collection is None:
        return []
    import fiftyone.core.labels as fol

    return sorted(collection.get_field_schema(embedded_doc_type=fol.Detections))


def check_mask_field(collection: Any, mask_field: str | None) -> str:
    """ValueError naming ``mask_field`` unless it is a Detections field with at least one mask."""
    if not mask_field:
        raise ValueError("mask_field is required: the Detections field whose detections have instance masks")
    fld = collection.get_field(mask_field)
    if fld is None:
        raise ValueError(f"mask_field {mask_field!r} is not a field of the dataset; Detections fields: "
                         f"{', '.join(mask_fields(collection)) or 'none'}")
    if field_kind(fld) != "Detections":
        raise ValueError(f"mask_field {mask_field!r} holds {field_kind(fld)}; it must hold Detections with masks")
    n = collection.count(f"{mask_field}.detections.mask") + collection.count(f"{mask_field}.detections.mask_path")
    if n == 0:
        raise ValueError(f"mask_field {mask_field!r}: none of its detections has a mask (or mask_path) to learn from")
    return mask_field


def suggest_output_dir(collection: Any) -> str:
    """A new folder for a run on ``collection``: <dataset dir>/edgetam-finetuned/<name>[-k]."""
    import fiftyone as fo

    name = re.sub(r"[^A-Za-z0-9._-]+", "_", getattr(collection, "dataset_name", None) or "dataset").strip("._")
    base = Path(fo.config.default_dataset_dir).expanduser() / OUT_ROOT / (name or "dataset")
    path, k = base, 1
    while path.exists() and (not path.is_dir() or any(path.iterdir())):
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return str(path)


def check_output_dir(output_dir: str) -> str:
    """ValueError naming ``output_dir`` when it is a file or a folder holding other files."""
    path = Path(output_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"output_dir {output_dir!r} is a file; give a new or empty folder")
    if path.is_dir() and any(path.iterdir()) and not (path / ".finetune").is_dir():
        raise ValueError(f"output_dir {output_dir!r} holds other files and no fine-tuning run; give a new or "
                         "empty folder (a cancelled run's folder resumes it)")
    return str(path)


def parse_finetune_params(params: dict[str, Any], collection: Any, has_selection: bool = False,
                          has_view: bool = False, check_files: bool = True) -> FinetuneParams:
    """Validate the operator's ``params`` against ``collection``; fill defaults."""
    import difflib

    for name in params:
        if name not in KNOWN and name not in VIEW_ONLY:
            close = difflib.get_close_matches(name, KNOWN, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; {OPERATOR} takes: {', '.join(KNOWN)}"
            raise ValueError(f"{name} is not a parameter of {OPERATOR}{hint}")
    check_target_media(collection, OPERATOR, False)
    target = _str(params, "target") or default_target(has_selection, has_view)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if target == "SELECTED_SAMPLES" and not has_selection:
        raise ValueError("target is SELECTED_SAMPLES but no samples are selected")
    p = FinetuneParams(target=target, checkpoint=_str(params, "checkpoint") or DEFAULT_CHECKPOINT)
    p.mask_field = check_mask_field(collection, _str(params, "mask_field"))
    p.train = _str(params, "train") or "decoder"
    if p.train not in TRAIN_MODES:
        raise ValueError(f"train must be one of {', '.join(TRAIN_MODES)}, got {p.train!r}")
    steps = params.get("steps")
    p.steps = None if steps is None or steps == "" else _int(params, "steps", 0, 1)
    p.output_dir = check_output_dir(_str(params, "output_dir") or suggest_output_dir(collection))
    p.device = check_device_name(params.get("device"))
    if check_files:
        check_checkpoint(p.checkpoint, False)
    return p


def iter_finetune(view: Any, p: FinetuneParams, cancel: Any = None) -> Generator[tuple[int, int], None, dict]:
    """Fine-tune ``p.checkpoint`` on ``view``'s ``p.mask_field`` into ``p.output_dir`` (in a helper
    thread), yielding ``(done, total)`` after each step; returns the result dict (the folder is
    registered with the dataset). ``p.device`` must be resolved already (``checks.resolve_device``)."""
    import edgetam_kit as ek

    from ..progress import is_cancelled

    q: queue.Queue = queue.Queue()
    box: dict[str, Any] = {}
    closed = threading.Event()  # the consumer went away (the App request ended): stop after this step

    def run() -> None:
        try:
            box["result"] = ek.finetune(p.checkpoint, view, p.output_dir, train=p.train, steps=p.steps,
                                        mask_field=p.mask_field, device=p.device,
                                        cancel=lambda: closed.is_set() or is_cancelled(cancel),
                                        progress=lambda done, total: q.put((int(done), int(total))))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            box["error"] = exc
        finally:
            q.put(None)

    thread = threading.Thread(target=run, name="edgetam-finetune", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not None:
            yield item
    finally:
        if thread.is_alive():
            closed.set()
        thread.join()
    if "error" in box:
        raise box["error"]
    r = box["result"]
    entry = register_checkpoint(view, r.path, train=r.train, mask_field=p.mask_field, base=p.checkpoint,
                                steps=r.steps_done, initial_iou=r.initial_iou, best_iou=r.best_iou)
    return result_of(r, entry)


def result_of(r: Any, entry: dict[str, Any]) -> dict[str, Any]:
    """The operator's result dict of a ``FinetuneResult`` and its registry entry."""
    def iou(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    msg = (f"EdgeTAM fine-tuned ({r.train}, {r.steps_done} steps in {r.seconds:.0f} s): validation IoU "
           f"{iou(r.initial_iou)} → {iou(r.best_iou)}; checkpoint {entry['path']} (now offered by every EdgeTAM "
           "operator)")
    if r.initial_iou is not None and r.best_iou is not None and r.best_iou <= r.initial_iou:
        msg += "; it is not better than the checkpoint it started from: add masks or train longer"
    return {"message": msg, "path": entry["path"], "train": r.train, "steps_done": int(r.steps_done),
            "initial_iou": entry["initial_iou"], "best_iou": entry["best_iou"], "seconds": float(r.seconds),
            "stopped_early": bool(r.stopped_early)}
