"""LoRA adapter folders: the trained low-rank factors plus the name of the weights they adapt.

A folder holds ``adapter_config.json`` ({"format": "edgetam-kit-lora", "base": SOURCE, "rank",
"alpha", "targets"}) and ``adapter_model.safetensors`` (``<module>.lora_a`` (r, in) and
``<module>.lora_b`` (out, r) per adapted layer). ``base`` is anything ``ek.load_model`` takes: a
path (a relative one is looked up next to the adapter folder first), a checkpoint name such as
``random:tiny``, or a hub id. ``ek.load_model(folder)`` loads the base and merges the adapter
into its weights before the runtime is built, so every backend runs merged weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .atomic import temp_path
from .hf_config import CheckpointError
from ..modeling.lora import LoRAConfig, lora_modules, lora_state_dict, merge_lora_weights

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "edgetam-kit-lora"


def is_adapter_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder with an ``adapter_config.json``."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / ADAPTER_CONFIG).is_file()


def save_adapter(model: nn.Module, folder: str | os.PathLike, base: str | os.PathLike, config: LoRAConfig) -> Path:
    """Write the LoRA factors of ``model`` (wrapped by ``add_lora(model, config)``) and ``base``
    (the source of the weights they adapt) into ``folder``; each file is written atomically,
    the config last. Returns the folder."""
    from safetensors.torch import save_file

    if not isinstance(config, LoRAConfig):
        raise TypeError(f"config must be a LoRAConfig, got {type(config).__name__}")
    if not isinstance(base, (str, os.PathLike)) or not str(base):
        raise ValueError(f"base must be the source the adapter applies to (a path, checkpoint name or hub id), "
                         f"got {base!r}")
    if not isinstance(model, nn.Module) or not lora_modules(model):
        raise ValueError("model: has no LoRA layers; wrap it with add_lora(model, config) and train it first")
    odd = sorted(n for n, m in lora_modules(model).items() if m.rank != config.rank or m.alpha != float(config.alpha))
    if odd:
        raise ValueError(f"config: rank {config.rank} / alpha {config.alpha} differ from the model's LoRA layers "
                         f"({odd[0]}, ...); pass the LoRAConfig given to add_lora")
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder: {folder} exists and is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in lora_state_dict(model).items()}
    meta = {"format": FORMAT, "base": str(base), "rank": config.rank, "alpha": float(config.alpha),
            "targets": list(config.targets)}
    for name, write in ((ADAPTER_WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"})),
                        (ADAPTER_CONFIG, lambda p: p.write_text(json.dumps(meta, indent=2)))):
        tmp = temp_path(folder / name)
        try:
            write(tmp)
            os.replace(tmp, folder / name)
        finally:
            tmp.unlink(missing_ok=True)
    return folder


def load_adapter(folder: str | os.PathLike) -> tuple[str, LoRAConfig, dict[str, torch.Tensor]]:
    """Read an adapter folder: (base source as written, its LoRAConfig, the factors on the CPU)."""
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    cfg_path, weights = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not cfg_path.is_file():
        raise FileNotFoundError(f"folder: {folder} has no {ADAPTER_CONFIG}; not a LoRA adapter folder")
    try:
        raw = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{cfg_path}: format must be {FORMAT!r}, got {got!r}")
    base = raw.get("base")
    if not isinstance(base, str) or not base:
        raise CheckpointError(f"{cfg_path}: 'base' must name the weights the adapter applies to, got {base!r}")
    targets = raw.get("targets")
    try:
        config = LoRAConfig(rank=raw.get("rank"), alpha=raw.get("alpha"),
                            targets=tuple(targets) if isinstance(targets, list) else targets)
    except ValueError as exc:
        raise CheckpointError(f"{cfg_path}: {exc}") from exc
    if not weights.is_file():
        raise FileNotFoundError(f"folder: {folder} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # truncated or corrupt file
        raise CheckpointError(f"{weights}: cannot read ({type(exc).__name__}: {exc}); the file may be truncated") from exc
    return base, config, tensors


def base_source(folder: Path, base: str) -> str:
    """Where ``base`` points: a relative path next to the adapter folder when one is there, else
    ``base`` as written (an absolute or working-directory path, a checkpoint name, a hub id)."""
    p = Path(base).expanduser()
    if not p.is_absolute() and (folder / p).exists():
        return str(folder / p)
    return base


def load_merged(folder: Path, load_base: Callable[[str], nn.Module]) -> nn.Module:
    """The base model of adapter ``folder`` (read by ``load_base(source)``) with the adapter merged
    into its weights, in place. A base that is itself an adapter folder is refused."""
    base, config, tensors = load_adapter(folder)
    source = base_source(folder, base)
    if is_adapter_folder(source):
        raise CheckpointError(f"{folder / ADAPTER_CONFIG}: base {base!r} is itself an adapter folder; "
                              "load and merge that one, save it with ek.save_model, and point base at it")
    model = load_base(source)
    try:
        merge_lora_weights(model.state_dict(), tensors, config)
    except ValueError as exc:
        raise CheckpointError(f"{folder / ADAPTER_WEIGHTS}: does not fit its base {base!r} ({exc})") from exc
    return model
