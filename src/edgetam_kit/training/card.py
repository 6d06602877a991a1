"""The model card (README.md) and ``training.json`` written beside a fine-tuned checkpoint."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from .settings import FinetuneSettings
from .state import EvalRecord


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_card(out: Path, *, base: str, data: str, n_train: int, n_val: int, n_objects: int,
               settings: FinetuneSettings, history: list[EvalRecord], initial_iou: float | None,
               best_step: int | None, best_iou: float | None, steps_done: int, random_base: str | None,
               adapter: bool) -> None:
    """Write ``out/README.md`` (what a person reads) and ``out/training.json`` (what tools read)."""
    from .. import __version__

    info: dict[str, Any] = {
        "library": "edgetam-kit", "version": __version__, "base": base, "data": data,
        "train_images": n_train, "val_images": n_val, "objects": n_objects,
        "settings": settings.as_dict(), "steps_done": steps_done,
        "initial_val_iou": initial_iou, "best_step": best_step, "best_val_iou": best_iou,
        "history": [r.__dict__ for r in history], "random_base": random_base,
        "python": platform.python_version(),
    }
    _atomic_write(out / "training.json", json.dumps(info, indent=2))
    rows = "\n".join(f"| {r.step} | {r.epoch:.2f} | {r.val_iou:.3f} | {r.calibration_error:.3f} | "
                     f"{'' if r.train_loss is None else f'{r.train_loss:.4f}'} |" for r in history)
    warning = (f"\n> **Random base weights** (`{random_base}`): this model was fine-tuned from random weights, for "
               "trying the tools; its masks mean nothing on real data.\n" if random_base else "")
    how = ("an adapter: `ek.load_model(\"<this folder>\")` loads the base and applies it" if adapter
           else "a complete checkpoint in the Hugging Face folder format")
    iou = lambda v: "n/a" if v is None or v != v else f"{v:.3f}"  # noqa: E731 - NaN-safe format
    card = f"""---
library_name: edgetam-kit
tags: [edgetam, segmentation, fine-tuned]
base_model: {base}
---
# EdgeTAM fine-tuned with edgetam-kit
{warning}
- **Base:** `{base}`
- **Data:** {data} — {n_train} training and {n_val} validation images, {n_objects} objects
- **Trained:** `{settings.train}` for {steps_done} steps (batch {settings.batch_size} objects,
  lr {settings.learning_rate:g}, seed {settings.seed}, prompts {', '.join(settings.prompts)},
  {settings.corrections} correction click(s))
- **Validation IoU** (one point per object, the best-scored mask): {iou(initial_iou)} before,
  {iou(best_iou)} at step {best_step} (the weights saved here)
- **Format:** {how}

## Use
```python
import edgetam_kit as ek
model = ek.load_model("{out.name}")          # the folder holding this card
```
`edgetam segment image.tif --checkpoint {out.name} ...`; in napari, pick this folder as the model;
in FiftyOne, pass it as `checkpoint`. Transformers: `EdgeTamModel.from_pretrained("{out.name}")`
(a complete checkpoint only).

## Validation history
| step | epoch | IoU | calibration error | train loss |
| ---: | ---: | ---: | ---: | ---: |
{rows}
"""
    _atomic_write(out / "README.md", card)
