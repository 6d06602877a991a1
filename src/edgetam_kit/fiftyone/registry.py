"""Fine-tuned checkpoints registered with a dataset: the ``finetune`` operator records each folder
it writes in the dataset's ``info`` (``edgetam_checkpoints``: newest first), and every operator
offers them as checkpoint choices beside the named ones.

An entry: ``{"path", "train", "mask_field", "base", "steps", "initial_iou", "best_iou",
"created_at"}``; entries whose folder is gone are not offered.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

REGISTRY_KEY = "edgetam_checkpoints"
NAMED = (("edgetam", "edgetam (the released weights)"),)


def _root(collection: Any) -> Any:
    return getattr(collection, "_root_dataset", None) or getattr(collection, "_dataset", collection)


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 4)


def register_checkpoint(collection: Any, path: str | Path, *, train: str, mask_field: str, base: str,
                        steps: int, initial_iou: float | None, best_iou: float | None) -> dict[str, Any]:
    """Record the checkpoint folder ``path`` in the dataset's info (replacing an entry of the same
    folder); returns the entry."""
    dataset = _root(collection)
    entry = {"path": str(Path(path).expanduser().resolve()), "train": train, "mask_field": mask_field,
             "base": str(base), "steps": int(steps), "initial_iou": _number(initial_iou),
             "best_iou": _number(best_iou),
             "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    info = dict(dataset.info or {})
    others = [e for e in info.get(REGISTRY_KEY, []) if isinstance(e, dict) and e.get("path") != entry["path"]]
    info[REGISTRY_KEY] = [entry, *others]
    dataset.info = info
    dataset.save()
    return entry


def registered_checkpoints(collection: Any) -> list[dict[str, Any]]:
    """The dataset's registered fine-tuned checkpoints whose folders still exist, newest first."""
    if collection is None:
        return []
    entries = (_root(collection).info or {}).get(REGISTRY_KEY, [])
    return [e for e in entries if isinstance(e, dict) and Path(str(e.get("path", ""))).is_dir()]


def describe(entry: dict[str, Any]) -> str:
    """A one-line label of an entry: what was trained, on which field, the IoU before and after."""
    def iou(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    return (f"fine-tuned ({entry.get('train')}, {entry.get('steps')} steps on {entry.get('mask_field')}; "
            f"IoU {iou(entry.get('initial_iou'))} → {iou(entry.get('best_iou'))}): {entry.get('path')}")


def checkpoint_choices(collection: Any) -> list[tuple[str, str]]:
    """(value, label) of the checkpoints to offer: the named ones, then the dataset's fine-tuned
    folders (newest first)."""
    return [*NAMED, *((e["path"], describe(e)) for e in registered_checkpoints(collection))]
