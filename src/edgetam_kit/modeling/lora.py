"""LoRA adapters (low-rank updates of frozen weights) for fine-tuning, in plain torch.

A wrapped layer computes ``base(x) + scale * B(A(x))`` with A (rank, in) and B (out, rank),
``scale = alpha / rank``; B starts at zero, so a freshly wrapped model equals the original.
Wrapped: every ``nn.Linear`` and every 1x1, groups=1 ``nn.Conv2d`` under the target prefixes
(RepViT's channel mixers and squeeze-excite convs, the FPN neck's lateral convs, the decoder's
attention and MLP layers, and its ``conv_s0``/``conv_s1`` skip projections: they are plain 1x1
projections of the encoder's features, so they adapt like the rest). Depthwise and k x k convs,
transposed convs and embeddings stay as they are.

    wrapped = add_lora(model, LoRAConfig(rank=8))   # in place; only lora_a / lora_b trainable
    ...train...
    adapter = lora_state_dict(model)                # {"<module>.lora_a": (r, in), "<module>.lora_b": (out, r)}
    merge_lora(model)                               # back to plain modules, original state_dict keys

The runtime's fast paths read plain weights: merge before ``optimize`` (``ek.load_model`` of an
adapter folder does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

DEFAULT_TARGETS = ("mask_decoder", "vision_encoder")


@dataclass(frozen=True)
class LoRAConfig:
    """rank: inner dimension r (>= 1); alpha: the update is scaled by alpha / rank; targets:
    qualified module-name prefixes whose Linear / 1x1 Conv2d layers get adapters; dropout: on the
    adapter's input while training (not saved with an adapter: merging does not need it)."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {self.rank!r}")
        if (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float))
                or not math.isfinite(self.alpha) or self.alpha <= 0):
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        if (not isinstance(self.targets, tuple) or not self.targets
                or not all(isinstance(t, str) and t for t in self.targets)):
            raise ValueError(f"targets must be a non-empty tuple of module-name prefixes (str), e.g. "
                             f"('mask_decoder',), got {self.targets!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class _LoRA(nn.Module):
    """Shared part of the wrappers: the frozen ``base`` and the factors A (rank, in), B (out, rank)."""

    def __init__(self, base: nn.Module, in_features: int, out_features: int, rank: int, alpha: float,
                 dropout: float) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.rank, self.alpha, self.scale = rank, float(alpha), alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, in_features, device=w.device, dtype=w.dtype))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear's weight (and peft's A)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_weight(self) -> torch.Tensor:
        """scale * B @ A, (out, in), in the base weight's dtype (computed in float32 at least)."""
        w = self.base.weight
        acc = torch.promote_types(w.dtype, torch.float32)
        return (self.scale * (self.lora_b.to(acc) @ self.lora_a.to(acc))).to(w.dtype)

    def merged(self) -> nn.Module:
        """The base module with the update added to its weight (in place), unwrapped."""
        with torch.no_grad():
            self.base.weight.add_(self.delta_weight().reshape(self.base.weight.shape))
        return self.base


class LoRALinear(_LoRA):
    """``nn.Linear`` plus a low-rank update: x (..., in) -> (..., out)."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        super().__init__(base, base.in_features, base.out_features, rank, alpha, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)


class LoRAConv2d(_LoRA):
    """1x1, groups=1 ``nn.Conv2d`` plus a low-rank update: (B, in, H, W) -> (B, out, H', W')
    (A takes the base's stride/padding/dilation, so the sum equals one merged conv)."""

    def __init__(self, base: nn.Conv2d, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        if not is_pointwise_conv(base):
            raise TypeError("base must be a 1x1 nn.Conv2d with groups=1 (zero padding), got "
                            f"{type(base).__name__}{getattr(base, 'kernel_size', '')}")
        super().__init__(base, base.in_channels, base.out_channels, rank, alpha, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.base
        a = self.lora_a[:, :, None, None]
        b = self.lora_b[:, :, None, None]
        low = F.conv2d(self.dropout(x), a, None, c.stride, c.padding, c.dilation)
        return c(x) + self.scale * F.conv2d(low, b)


def is_pointwise_conv(module: nn.Module) -> bool:
    """A plain 1x1 ``nn.Conv2d`` with groups=1 whose padding (if any) is zeros."""
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.groups == 1
            and (module.padding_mode == "zeros" or module.padding in ((0, 0), 0)))


def _wrap(module: nn.Module, config: LoRAConfig) -> nn.Module | None:
    if type(module) is nn.Linear:
        return LoRALinear(module, config.rank, config.alpha, config.dropout)
    if is_pointwise_conv(module):
        return LoRAConv2d(module, config.rank, config.alpha, config.dropout)
    return None


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    return any(name == t or name.startswith(t.rstrip(".") + ".") for t in targets)


def _set_child(model: nn.Module, name: str, child: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, child)


def lora_modules(model: nn.Module) -> dict[str, _LoRA]:
    """The LoRA wrappers in ``model``, by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _LoRA)}


def add_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap (in place) every ``nn.Linear`` and 1x1 groups=1 ``nn.Conv2d`` whose qualified name
    starts with one of ``config.targets`` (a whole name component: "mask_decoder" matches
    "mask_decoder.x", not "mask_decoder2"); freeze all other parameters, so that only the
    ``lora_a`` / ``lora_b`` factors train. Returns the wrapped module names, sorted."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(config, LoRAConfig):
        raise TypeError(f"config must be a LoRAConfig, got {type(config).__name__}")
    if lora_modules(model):
        raise ValueError("model: already has LoRA layers; merge_lora(model) first or train the ones it has")
    chosen = [(n, m) for n, m in model.named_modules() if n and _matches(n, config.targets)]
    wrapped: list[str] = []
    for name, module in chosen:
        lora = _wrap(module, config)
        if lora is not None:
            _set_child(model, name, lora)
            wrapped.append(name)
    if not wrapped:
        tops = sorted({n.split(".")[0] for n, _ in model.named_children()})
        raise ValueError(f"targets: no nn.Linear or 1x1 nn.Conv2d under {list(config.targets)}; "
                         f"the model's top-level modules are {tops}")
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith((".lora_a", ".lora_b")))
    return sorted(wrapped)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter factors only: ``{"<module>.lora_a": (r, in), "<module>.lora_b": (out, r)}``,
    detached (views of the parameters; clone to keep a snapshot)."""
    out: dict[str, torch.Tensor] = {}
    for name, m in sorted(lora_modules(model).items()):
        out[f"{name}.lora_a"] = m.lora_a.detach()
        out[f"{name}.lora_b"] = m.lora_b.detach()
    if not out:
        raise ValueError("model: has no LoRA layers (call add_lora first)")
    return out


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace (in place) each wrapper by its base module with W += scale * B @ A; afterwards
    ``model.state_dict()`` has the original key names. Parameters stay as add_lora left them
    (frozen: ``model.requires_grad_(True)`` to train further); returns ``model``."""
    for name, m in lora_modules(model).items():
        _set_child(model, name, m.merged())
    return model


def merge_lora_weights(state: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], config: LoRAConfig) -> None:
    """Add a saved adapter to plain weights, in place: for each ``name`` with ``name.lora_a``
    (r, in) and ``name.lora_b`` (out, r) in ``lora``, ``state[name + ".weight"]`` ((out, in) or
    (out, in, 1, 1)) += (alpha / rank) * B @ A. ``state`` may be a model's ``state_dict()``
    (its tensors share storage with the parameters, so the model is updated)."""
    if not isinstance(config, LoRAConfig):
        raise TypeError(f"config must be a LoRAConfig, got {type(config).__name__}")
    names = sorted({k.rpartition(".")[0] for k in lora})
    bad = [k for k in lora if not k.endswith((".lora_a", ".lora_b"))]
    if bad:
        raise ValueError(f"lora: keys must end in .lora_a or .lora_b, got {bad[:5]}")
    if not names:
        raise ValueError("lora: no tensors")
    problems = []
    for name in names:
        a, b, key = lora.get(f"{name}.lora_a"), lora.get(f"{name}.lora_b"), f"{name}.weight"
        if a is None or b is None:
            problems.append(f"{name}: needs both lora_a and lora_b")
        elif key not in state:
            problems.append(f"{key}: not in the model")
        elif (a.ndim != 2 or b.ndim != 2 or a.shape[0] != config.rank or b.shape[1] != config.rank
              or state[key].numel() != a.shape[1] * b.shape[0] or state[key].shape[0] != b.shape[0]):
            problems.append(f"{name}: lora_a {tuple(a.shape)} / lora_b {tuple(b.shape)} do not fit "
                            f"{key} {tuple(state[key].shape)} at rank {config.rank}")
    if problems:
        raise ValueError("lora: the adapter does not fit these weights: " + "; ".join(problems[:10]))
    with torch.no_grad():
        for name in names:
            w = state[f"{name}.weight"]
            acc = torch.promote_types(w.dtype, torch.float32)
            delta = config.scale * (lora[f"{name}.lora_b"].to(w.device, acc) @ lora[f"{name}.lora_a"].to(w.device, acc))
            w.add_(delta.reshape(w.shape).to(w.dtype))
