"""Image encoder: a RepViT trunk from timm and a feature-pyramid neck.

Input: normalised pixels (B, 3, S, S) with S = image_size. Output: a list of
``len(trunk_channels) - scalp`` feature maps with ``d_model`` channels, finest first
(for EdgeTAM at S=1024: 256x256, 128x128 and 64x64).
"""

from __future__ import annotations

import timm
import torch
from torch import nn
import torch.nn.functional as F

from ..config import ImageEncoderConfig


class TimmTrunk(nn.Module):
    """A timm ``features_only`` network returning its four stage outputs (stride 4..32)."""

    def __init__(self, name: str, channels: tuple[int, ...]) -> None:
        super().__init__()
        # pretrained=False always: weights come from the EdgeTAM checkpoint, never a download.
        self.timm_model = timm.create_model(
            name, pretrained=False, in_chans=3, features_only=True, out_indices=tuple(range(len(channels)))
        )
        got = tuple(self.timm_model.feature_info.channels())
        if got != tuple(channels):
            raise ValueError(f"trunk {name!r} gives channels {got}, config says {tuple(channels)}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.timm_model(x))


class FpnNeck(nn.Module):
    """1x1 lateral convs to ``d_model`` channels, with a nearest-neighbour top-down path
    on ``top_down_levels`` (level 0 = finest)."""

    def __init__(self, in_channels: tuple[int, ...], d_model: int, top_down_levels: tuple[int, ...]) -> None:
        super().__init__()
        # convs[0] handles the coarsest level, as in both published checkpoint layouts.
        self.convs = nn.ModuleList(nn.Conv2d(c, d_model, kernel_size=1) for c in reversed(in_channels))
        self.top_down_levels = set(top_down_levels)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(xs)
        out: list[torch.Tensor] = [xs[0]] * n
        prev = None
        for level in range(n - 1, -1, -1):
            lateral = self.convs[n - 1 - level](xs[level])
            if prev is not None and level in self.top_down_levels:
                up = F.interpolate(prev.float(), scale_factor=2.0, mode="nearest").to(lateral.dtype)
                prev = lateral + up
            else:
                prev = lateral
            out[level] = prev
        return out


class ImageEncoder(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__()
        self.backbone = TimmTrunk(cfg.trunk, cfg.trunk_channels)
        self.neck = FpnNeck(cfg.trunk_channels, cfg.d_model, cfg.fpn_top_down_levels)
        self.scalp = cfg.scalp

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        feats = self.neck(self.backbone(pixels))
        return feats[: len(feats) - self.scalp] if self.scalp else feats
