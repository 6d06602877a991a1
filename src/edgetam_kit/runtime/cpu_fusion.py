"""Fused oneDNN kernels for RepViT's pointwise steps on CPU (used by the eager runtime).

After folding, a RepViT block is a depthwise conv, an optional squeeze-excite, and an MLP
of two 1x1 convs with a GELU between them, added back to its input. On CPU the GELU and the
residual add are separate passes over 96-384 channel maps (a fifth of an encode on a 2-core
AVX2 machine). oneDNN can apply both inside the convolutions (``mkldnn._convolution_pointwise``,
the kernels torch.compile's CPU backend emits): exact erf GELU as a post-op of the first
conv, the residual as a post-op sum of the second. Same arithmetic per element; only the
rounding of the fused steps may differ (~1e-6 relative).

The memory attention's ReLU MLP uses the same idea for its two linear layers (``linear_relu``,
``linear_add``). Each fused step falls back to the plain ops when the kernel cannot run: a
non-CPU device, a dtype other than float32, autocast active, a PyTorch built without oneDNN,
or inside torch.compile (which does its own fusion).

The kernels are private oneDNN ops (``torch.ops.mkldnn._convolution_pointwise`` and
``_linear_pointwise``). They are used only after ``kernels_ok()`` has checked, once per process,
that they exist on the installed torch and agree with the public ops on a small input; otherwise
(or with ``EDGETAM_KIT_NO_FUSED_KERNELS=1``, or ``use_fused_kernels(False)``) every step runs
the public ops.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn
import torch.nn.functional as F

DISABLE_ENV = "EDGETAM_KIT_NO_FUSED_KERNELS"
_enabled = True


def use_fused_kernels(enabled: bool) -> None:
    """Turn the fused kernels on (default, when ``kernels_ok()``) or off (public ops) process-wide."""
    global _enabled
    _enabled = bool(enabled)


@functools.lru_cache(maxsize=1)
def kernels_ok() -> bool:
    """Whether the private oneDNN ops exist here and agree with the public ops (checked once)."""
    if os.environ.get(DISABLE_ENV, "").strip() in ("1", "true", "yes") or not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(1, 8, 5, 5, generator=gen)
            conv = nn.Conv2d(8, 8, 1)
            fused = torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, [0, 0], [1, 1], [1, 1], 1,
                                                            "gelu", [None], "none")
            added = torch.ops.mkldnn._convolution_pointwise.binary(x, x, conv.weight, conv.bias, [0, 0], [1, 1],
                                                                   [1, 1], 1, "add", None, None, [], None)
            lin = nn.Linear(8, 8)
            t = torch.randn(3, 8, generator=gen)
            relu = torch.ops.mkldnn._linear_pointwise(t, lin.weight, lin.bias, "relu", [], "")
            ladd = torch.ops.mkldnn._linear_pointwise.binary(t, t, lin.weight, lin.bias, "add")
            pairs = ((fused, F.gelu(conv(x))), (added, x + conv(x)), (relu, F.relu(lin(t))), (ladd, t + lin(t)))
            return all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in pairs)
    except Exception:  # missing op, changed signature, unsupported build
        return False


def _on() -> bool:
    return _enabled and not torch.compiler.is_compiling() and kernels_ok()


def _fusable(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    return (_on() and x.device.type == "cpu" and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and conv.weight.requires_grad))


def _geometry(conv: nn.Conv2d) -> tuple[list[int], list[int], list[int], int]:
    return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups


def conv_gelu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``F.gelu(conv(x))`` (exact GELU) in one oneDNN call when possible."""
    if not _fusable(x, conv) or isinstance(conv.padding, str):
        return F.gelu(conv(x))
    return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, *_geometry(conv), "gelu", [None], "none")


def conv_add(x: torch.Tensor, conv: nn.Conv2d, residual: torch.Tensor) -> torch.Tensor:
    """``residual + conv(x)`` in one oneDNN call when possible (``residual`` has the output's shape)."""
    if not _fusable(x, conv) or isinstance(conv.padding, str) or residual.dtype != torch.float32:
        return residual + conv(x)
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, conv.weight, conv.bias, *_geometry(conv), "add", None, None, [], None)


def _fusable_linear(x: torch.Tensor, lin: nn.Linear) -> bool:
    # torch.compile fuses on its own (and its lowering of these kernels wants constant weights)
    return (_on() and x.device.type == "cpu" and x.dtype == torch.float32 and lin.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.is_grad_enabled())


def linear_relu(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """``F.relu(lin(x))`` for x (..., in) in one oneDNN call when possible."""
    if not _fusable_linear(x, lin):
        return F.relu(lin(x))
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), lin.weight, lin.bias, "relu", [], "")
    return y.view(*x.shape[:-1], y.shape[-1])


def linear_add(x: torch.Tensor, lin: nn.Linear, residual: torch.Tensor) -> torch.Tensor:
    """``residual + lin(x)`` (``residual`` shaped like the output) in one oneDNN call when possible."""
    if not _fusable_linear(x, lin) or residual.dtype != torch.float32:
        return residual + lin(x)
    y = torch.ops.mkldnn._linear_pointwise.binary(x.reshape(-1, x.shape[-1]), residual.reshape(-1, residual.shape[-1]),
                                                  lin.weight, lin.bias, "add")
    return y.view(residual.shape)


class FusedMlpResidual(nn.Module):
    """``x + conv2(gelu(conv1(x)))``: RepViT's channel mixer and its residual add."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_add(conv_gelu(x, self.conv1), self.conv2, x)


class FusedRepViTBlock(nn.Module):
    """timm's ``RepViTBlock`` after folding: token mixer, squeeze-excite, fused MLP + residual."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.token_mixer, self.se = block.token_mixer, block.se
        self.mlp = FusedMlpResidual(block.channel_mixer.conv1, block.channel_mixer.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.se(self.token_mixer(x)))


class FusedRepVitDownsample(nn.Module):
    """timm's ``RepVitDownsample`` after folding, with its block and FFN fused."""

    def __init__(self, down: nn.Module) -> None:
        super().__init__()
        self.pre_block = FusedRepViTBlock(down.pre_block)
        self.spatial_downsample, self.channel_downsample = down.spatial_downsample, down.channel_downsample
        self.ffn = FusedMlpResidual(down.ffn.conv1, down.ffn.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.channel_downsample(self.spatial_downsample(self.pre_block(x))))


class FusedStem(nn.Module):
    """timm's ``RepVitStem`` after folding: conv, GELU (fused into the conv), conv."""

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        self.conv1, self.conv2 = stem.conv1, stem.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(conv_gelu(x, self.conv1))


def fuse_repvit(trunk: nn.Module) -> int:
    """Replace, in place, the folded RepViT blocks, downsamples and stem of ``trunk`` (timm's
    RepViT after ``reparameterize_model``) by their fused forms. Returns how many were
    replaced; modules without the expected folded layout are left alone."""
    replaced = 0
    for name, child in list(trunk.named_children()):
        new = _fused(child)
        if new is None:
            replaced += fuse_repvit(child)
        else:
            setattr(trunk, name, new)
            replaced += 1
    return replaced


def _fused(module: nn.Module) -> nn.Module | None:
    kind = type(module).__name__
    if kind == "RepViTBlock" and _plain_mlp(getattr(module, "channel_mixer", None)):
        return FusedRepViTBlock(module)
    if (kind == "RepVitDownsample" and _plain_mlp(getattr(module, "ffn", None))
            and _plain_mlp(getattr(getattr(module, "pre_block", None), "channel_mixer", None))):
        return FusedRepVitDownsample(module)
    if kind == "RepVitStem" and isinstance(getattr(module, "conv1", None), nn.Conv2d) \
            and _is_exact_gelu(getattr(module, "act1", None)):
        return FusedStem(module)
    return None


def _is_exact_gelu(act: nn.Module | None) -> bool:
    return isinstance(act, nn.GELU) and act.approximate == "none"


def _plain_mlp(mlp: nn.Module | None) -> bool:
    """conv1 (1x1 Conv2d) -> exact GELU -> conv2 (1x1 Conv2d), as folding leaves RepVitMlp."""
    return (isinstance(getattr(mlp, "conv1", None), nn.Conv2d) and isinstance(getattr(mlp, "conv2", None), nn.Conv2d)
            and _is_exact_gelu(getattr(mlp, "act", None)))
