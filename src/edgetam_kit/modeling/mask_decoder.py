"""Mask decoder (SAM 2): a two-way transformer over [object-score, IoU, 4 mask] tokens plus the
prompt tokens; the image embedding is upsampled to stride 4 by two transposed convolutions (with
the encoder's high-resolution features added); hypernetwork MLPs turn each mask token into a
mask over it.

Outputs low-resolution logits (B, K, 4E, 4E), predicted IoU (B, K), the mask tokens (B, K, C) and
object-score logits (B, 1); K = 3 with ``multimask``, else 1.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..config import MaskDecoderConfig
from .layers import FeedForward, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    def __init__(self, cfg: MaskDecoderConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.cfg = cfg
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.obj_score_token = nn.Embedding(1, dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.transformer = TwoWayTransformer(cfg.depth, dim, cfg.num_heads, cfg.mlp_dim, cfg.attention_downsample_rate)
        self.upscale_conv1 = nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2)
        self.upscale_layer_norm = LayerNorm2d(dim // 4)
        self.upscale_conv2 = nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2)
        # 1x1 projections of the two finer FPN levels, applied once per image (see EdgeTam.encode_image).
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            FeedForward(dim, dim, dim // 8, depth=3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = FeedForward(
            dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, cfg.iou_head_depth, sigmoid_output=True
        )
        self.pred_obj_score_head = FeedForward(dim, dim, 1, depth=3)

    def output_tokens(self, batch: int) -> torch.Tensor:
        """(B, 2 + num_mask_tokens, C): the object-score, IoU and mask tokens."""
        tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], 0)
        return tokens.unsqueeze(0).expand(batch, -1, -1)

    def upscale(self, image: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """image (B, C, E, E) -> (B, C/8, 4E, 4E) with the skip features s0 (B, C/8, 4E, 4E) and
        s1 (B, C/4, 2E, 2E) added after each transposed convolution."""
        s0, s1 = high_res
        x = F.gelu(self.upscale_layer_norm(self.upscale_conv1(image) + s1))
        return F.gelu(self.upscale_conv2(x) + s0)

    def forward(
        self,
        image_embed: torch.Tensor,
        image_pe: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """image_embed, dense: (B, C, E, E); image_pe: (1, C, E, E); high_res: (B, C/8, 4E, 4E),
        (B, C/4, 2E, 2E); sparse: (B, N, C) prompt tokens. Returns masks (B, K, 4E, 4E),
        iou (B, K), mask tokens (B, K, C), object-score logits (B, 1)."""
        b, c, h, w = image_embed.shape
        tokens = torch.cat([self.output_tokens(b), sparse.to(image_embed.dtype)], dim=1)
        tokens, image = self.transformer(image_embed + dense, image_pe, tokens)
        mask_tokens = tokens[:, 2:2 + self.num_mask_tokens]
        upscaled = self.upscale(image.transpose(1, 2).reshape(b, c, h, w), high_res)
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        masks = (hyper @ upscaled.flatten(2)).view(b, self.num_mask_tokens, 4 * h, 4 * w)
        iou = self.iou_prediction_head(tokens[:, 1])
        obj_score = self.pred_obj_score_head(tokens[:, 0])
        if multimask:
            return masks[:, 1:], iou[:, 1:], mask_tokens[:, 1:], obj_score
        if self.cfg.dynamic_multimask_via_stability and not self.training:
            masks, iou = pick_stable(masks, iou, self.cfg.dynamic_multimask_stability_delta,
                                     self.cfg.dynamic_multimask_stability_thresh)
            return masks, iou, mask_tokens[:, :1], obj_score
        return masks[:, :1], iou[:, :1], mask_tokens[:, :1], obj_score


def pick_stable(masks: torch.Tensor, iou: torch.Tensor, delta: float,
                thresh: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-mask output from all candidates (B, 4, ...): keep token 0's mask when it is stable
    under a +-``delta`` change of threshold (IoU >= ``thresh``), else the multimask output with
    the highest predicted IoU. Returns (B, 1, 4E, 4E) masks and (B, 1) IoU."""
    single, single_iou = masks[:, :1], iou[:, :1]
    flat = single.flatten(-2)
    inter = (flat > delta).sum(-1).float()
    union = (flat > -delta).sum(-1).float()
    stability = torch.where(union > 0, inter / union, torch.ones_like(union))
    best = iou[:, 1:].argmax(-1)
    rows = torch.arange(masks.shape[0], device=masks.device)
    best_mask = masks[:, 1:][rows, best].unsqueeze(1)
    best_iou = iou[:, 1:][rows, best].unsqueeze(1)
    stable = stability >= thresh  # (B, 1)
    return torch.where(stable[..., None, None], single, best_mask), torch.where(stable, single_iou, best_iou)
