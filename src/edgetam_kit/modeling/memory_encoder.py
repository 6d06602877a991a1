"""Memory encoder: fuses a frame's image features with its predicted mask into a
64-channel memory map (B, 64, E, E), plus its sine positional encoding."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .layers import LayerNorm2d
from .position_encoding import sine_encoding


class _DownStage(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1)
        self.layer_norm = LayerNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.layer_norm(self.conv(x)))


class MaskDownsampler(nn.Module):
    """(B, 1, S, S) mask -> (B, dim, S/16, S/16): four stride-2 convs (x4 channels each), a 1x1 conv."""

    def __init__(self, dim: int = 256, stages: int = 4) -> None:
        super().__init__()
        chans = [1] + [4 ** (i + 1) for i in range(stages)]
        self.layers = nn.ModuleList(_DownStage(chans[i], chans[i + 1]) for i in range(stages))
        self.final_conv = nn.Conv2d(chans[-1], dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.final_conv(x)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, 4x MLP, layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.depthwise_conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.layer_norm = LayerNorm2d(dim)
        self.pointwise_conv1 = nn.Linear(dim, 4 * dim)
        self.pointwise_conv2 = nn.Linear(4 * dim, dim)
        self.scale = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer_norm(self.depthwise_conv(x)).permute(0, 2, 3, 1)
        y = self.pointwise_conv2(F.gelu(self.pointwise_conv1(y))) * self.scale
        return x + y.permute(0, 3, 1, 2)


class MemoryFuser(nn.Module):
    def __init__(self, dim: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConvNeXtBlock(dim) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, dim: int = 256, out_dim: int = 64, fuser_depth: int = 2) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownsampler(dim)
        self.feature_projection = nn.Conv2d(dim, dim, kernel_size=1)
        self.memory_fuser = MemoryFuser(dim, fuser_depth)
        self.projection = nn.Conv2d(dim, out_dim, kernel_size=1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features: (B, C, E, E) raw image features; mask: (B, 1, S, S) already scaled
        (x*20-10 of a sigmoid or binary mask). Returns memory (B, 64, E, E) and its pos (B, 64, E, E)."""
        x = self.feature_projection(features) + self.mask_downsampler(mask)
        x = self.projection(self.memory_fuser(x))
        b, c, h, w = x.shape
        pos = sine_encoding(h, w, c, device=x.device).to(x.dtype).expand(b, -1, -1, -1)
        return x, pos
