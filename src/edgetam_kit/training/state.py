"""A fine-tuning run's resumable state, written atomically to ``<out>/.finetune/``.

``state.pt`` holds everything the next step depends on (the trained tensors, the optimizer's
moments, the step) plus the best tensors so far and the history; ``state.json`` repeats the step
and fingerprint for tools that should not unpickle. A run killed at any moment leaves the last
complete state (the file is replaced, never rewritten in place).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

STATE_DIR = ".finetune"


@dataclass
class EvalRecord:
    """One validation: after ``step`` optimizer steps (epoch = step / steps per epoch)."""

    step: int
    epoch: float
    val_iou: float
    calibration_error: float
    train_loss: float | None
    train_iou: float | None
    seconds: float


@dataclass
class RunState:
    """What a resumed run restores. trainable / best: name -> tensor of the trained parameters."""

    step: int
    fingerprint: str
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    history: list[EvalRecord] = field(default_factory=list)
    best: dict[str, torch.Tensor] | None = None
    best_step: int | None = None
    best_iou: float | None = None
    seconds: float = 0.0


def state_dir(out: Path) -> Path:
    return out / STATE_DIR


def save_state(out: Path, state: RunState) -> None:
    """Write ``state`` atomically (tmp file + os.replace)."""
    folder = state_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    payload = dataclasses.asdict(state)
    payload["history"] = [dataclasses.asdict(r) for r in state.history]
    tmp = folder / ".state.pt.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, folder / "state.pt")
    info = {"step": state.step, "fingerprint": state.fingerprint, "best_step": state.best_step,
            "best_iou": state.best_iou}
    tmp_json = folder / ".state.json.tmp"
    tmp_json.write_text(json.dumps(info))
    os.replace(tmp_json, folder / "state.json")


def load_state(out: Path) -> RunState | None:
    """The saved state of ``out``, or None when there is none. ValueError naming the file when it
    cannot be read."""
    path = state_dir(out) / "state.pt"
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        payload["history"] = [EvalRecord(**r) for r in payload["history"]]
        return RunState(**payload)
    except Exception as exc:  # noqa: BLE001 - any unreadable state is named
        raise ValueError(f"out: the saved fine-tuning state {path} cannot be read ({type(exc).__name__}: {exc}); "
                         "pass resume=False to start over") from exc


def clear_state(out: Path) -> None:
    folder = state_dir(out)
    for name in ("state.pt", "state.json", ".state.pt.tmp", ".state.json.tmp"):
        (folder / name).unlink(missing_ok=True)
