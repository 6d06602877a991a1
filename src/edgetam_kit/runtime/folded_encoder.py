"""The image encoder folded for inference (a fast path of ``modeling.image_encoder`` plus the
decoder's two 1x1 skip projections), built from the plain modules and parity-tested against them."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .cpu_fusion import fuse_repvit


def _compose_1x1(first: nn.Conv2d, second: nn.Conv2d) -> nn.Conv2d:
    """One 1x1 conv equal to ``second(first(x))`` (both 1x1, no nonlinearity between)."""
    w1, w2 = first.weight.double()[:, :, 0, 0], second.weight.double()[:, :, 0, 0]
    b1 = first.bias.double() if first.bias is not None else torch.zeros(w1.shape[0], dtype=torch.float64)
    b2 = second.bias.double() if second.bias is not None else torch.zeros(w2.shape[0], dtype=torch.float64)
    conv = nn.Conv2d(w1.shape[1], w2.shape[0], kernel_size=1).to(first.weight.device)
    conv.weight.data = (w2 @ w1)[:, :, None, None].to(first.weight.dtype)
    conv.bias.data = (w2 @ b1.to(w2.device) + b2.to(w2.device)).to(first.weight.dtype)
    return conv


class FoldedEncoder(nn.Module):
    """The image encoder prepared for inference: returns ``(embed, s0, s1)`` as
    ``EdgeTam.encode_image`` needs them (raw lowest-resolution map, and the two finer FPN
    levels already projected by the mask decoder's ``conv_s0`` / ``conv_s1``).

    - RepViT's BatchNorms and RepVGG branches are folded into single convs (timm's ``fuse``);
    - the trunk and neck run channels-last (faster oneDNN convolutions on CPU);
    - ``fuse_pointwise``: each block's GELU and residual add run inside its 1x1 convolutions
      on CPU (``cpu_fusion``; torch.compile does its own fusion, so the compiled backend
      turns this off);
    - FPN levels 0 and 1 have no top-down input in EdgeTAM, so their 1x1 lateral conv and
      the decoder's 1x1 projection are composed into one conv: the 256-channel 256x256 map
      is never made.
    Equal to the plain modules up to float rounding (~1e-6 relative).
    """

    def __init__(self, model: Any, fuse_pointwise: bool = True) -> None:
        super().__init__()
        from timm.utils.model import reparameterize_model

        enc = model.vision_encoder
        self.trunk = reparameterize_model(copy.deepcopy(enc.backbone.timm_model).eval(), inplace=True)
        self.fused_blocks = fuse_repvit(self.trunk) if fuse_pointwise else 0
        self.lateral = copy.deepcopy(enc.neck.convs)  # lateral[n - 1 - level], coarsest first
        self.top_down = set(enc.neck.top_down_levels)
        self.n = len(self.lateral)
        self.last = self.n - 1 - enc.scalp  # the level used as the image embedding
        dec = model.mask_decoder
        self.compose = not ({0, 1} & self.top_down) and self.last >= 2
        if self.compose:
            self.s0 = _compose_1x1(enc.neck.convs[self.n - 1], dec.conv_s0)
            self.s1 = _compose_1x1(enc.neck.convs[self.n - 2], dec.conv_s1)
        else:
            self.s0, self.s1 = copy.deepcopy(dec.conv_s0), copy.deepcopy(dec.conv_s1)
        self.eval().requires_grad_(False)
        # timm's fuse makes new float32 convs: follow the model's device and dtype
        self.to(device=model.device, dtype=model.dtype, memory_format=torch.channels_last)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs = self.trunk(pixels.contiguous(memory_format=torch.channels_last))
        out: list[torch.Tensor | None] = [None] * self.n
        prev = None
        lowest = 2 if self.compose else 0
        for level in range(self.n - 1, lowest - 1, -1):
            lateral = self.lateral[self.n - 1 - level](xs[level])
            if prev is not None and level in self.top_down:
                prev = lateral + torch.nn.functional.interpolate(prev.float(), scale_factor=2.0,
                                                                 mode="nearest").to(lateral.dtype)
            else:
                prev = lateral
            out[level] = prev
        if self.compose:
            s0, s1 = self.s0(xs[0]), self.s1(xs[1])
        else:
            s0, s1 = self.s0(out[0]), self.s1(out[1])
        return out[self.last].contiguous(), s0.contiguous(), s1.contiguous()
