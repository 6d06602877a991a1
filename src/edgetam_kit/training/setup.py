"""What a run needs before its first step: a trainable copy of the base model, the parameters it
trains, a checked output folder."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

from ..modeling.edgetam import EdgeTam
from .settings import FinetuneSettings
from .state import STATE_DIR

# Parameters that "decoder" leaves frozen: the image features depend on them (runtime/weights.py's
# ENCODER_TENSORS), so keeping them lets the trained model share the base's embedding cache.
FEATURE_PARAMS = ("vision_encoder.", "mask_decoder.conv_s0.", "mask_decoder.conv_s1.", "no_memory_embedding")
IMAGE_PATH = ("vision_encoder.", "prompt_encoder.", "mask_decoder.", "no_memory_embedding")


def base_model(model_or_source: Any, device: str | torch.device | None) -> tuple[EdgeTam, str]:
    """(a plain, trainable copy of the base on ``device``, a label of the base for the card)."""
    from ..io.checkpoint import load_model

    if isinstance(model_or_source, EdgeTam):
        label = getattr(model_or_source, "_edgetam_source", None) or "an in-memory model"
        model = copy.deepcopy(model_or_source)
        with torch.no_grad():  # a model built under inference_mode has tensors autograd refuses
            for mod in model.modules():
                for name, t in list(mod.named_parameters(recurse=False)):
                    if t.is_inference():
                        setattr(mod, name, torch.nn.Parameter(t.clone(), requires_grad=t.requires_grad))
                for name, t in list(mod.named_buffers(recurse=False)):
                    if t.is_inference():
                        mod.register_buffer(name, t.clone())
    elif isinstance(model_or_source, (str, os.PathLike)):
        label = str(model_or_source)
        model = load_model(model_or_source, device="cpu", backend="none")
    else:
        raise TypeError(f"model_or_source must be an EdgeTam (from ek.load_model) or a checkpoint source (path, name "
                        f"or hub id), got {type(model_or_source).__name__}")
    if device is None:
        device = model.device
    elif device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a torch device string such as 'cpu' or 'cuda', got {device!r}") from exc
    return model.to(device=device, dtype=torch.float32).eval(), label


def select_trainable(model: EdgeTam, settings: FinetuneSettings) -> list[str]:
    """Set requires_grad for ``settings.train`` (adding LoRA adapters for "lora"); the names trained."""
    for p in model.parameters():
        p.requires_grad_(False)
    if settings.train == "lora":
        from ..modeling.lora import LoRAConfig, add_lora

        add_lora(model, LoRAConfig(rank=settings.lora_rank, alpha=settings.lora_alpha))
        return [n for n, p in model.named_parameters() if p.requires_grad]
    names = []
    for name, p in model.named_parameters():
        if not name.startswith(IMAGE_PATH) or name.startswith("prompt_encoder.shared_embedding"):
            continue
        if settings.train == "decoder" and name.startswith(FEATURE_PARAMS) and not (
                settings.train_projections and not name.startswith("vision_encoder.")):
            continue
        p.requires_grad_(True)
        names.append(name)
    return names


def prepare_out(out: Any, resume: bool) -> Path:
    """The output folder, created and checked writable. ValueError naming ``out`` when it is a file,
    not writable, or a non-empty folder that holds no fine-tuning run (nothing of the user's is
    overwritten)."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path (str or Path), got {type(out).__name__}")
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"out: {path} exists and is not a folder; pass a folder for the checkpoint")
    if path.is_dir() and any(path.iterdir()) and not (path / STATE_DIR).is_dir():
        raise ValueError(f"out: {path} is not empty and holds no fine-tuning run; pass an empty or new folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"out: cannot write to {path} ({exc.strerror or exc}); pass a writable folder") from exc
    return path


def trained_tensors(model: EdgeTam, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().cpu().clone() for n in names}


def load_tensors(model: EdgeTam, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].device))
