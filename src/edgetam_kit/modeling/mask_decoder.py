"""Mask decoder: a two-way transformer over [object-score, IoU, 4 mask] tokens plus the
prompt tokens, then hypernetwork MLPs that turn each mask token into a mask over the
upsampled image embedding (stride 4), with high-resolution skip features added.

Outputs low-resolution logits (B, K, 4E, 4E), predicted IoU (B, K), object-score
logits (B, 1) and the mask tokens (B, K, C).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..config import MaskDecoderConfig
from .layers import FeedForward, LayerNorm2d
from .transformer import ImageContext, TwoWayTransformer


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

    def forward(
        self,
        image_embed: torch.Tensor,
        image_pe: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        sparse: torch.Tensor,
        dense: torch.Tensor | None,
        multimask: bool,
        context: ImageContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """image_embed, dense: (B, C, E, E); image_pe: (1, C, E, E); high_res: (B, C/8, 4E, 4E),
        (B, C/4, 2E, 2E); sparse: (B, N, C). All batch dims already equal B.

        context: ``image_context(image_embed + dense, image_pe)`` computed earlier (rows
        matching B); then ``dense`` is not used."""
        b = sparse.shape[0]
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], 0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse.to(out_tokens.dtype)], dim=1)
        c, h, w = image_embed.shape[1:]
        if context is None:
            context = self.transformer.image_context(image_embed + dense, image_pe)
        tokens, src = self.transformer(None, None, tokens, context)
        iou_token = tokens[:, 1]
        mask_tokens = tokens[:, 2 : 2 + self.num_mask_tokens]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        feat_s0, feat_s1 = high_res
        up = F.gelu(self.upscale_layer_norm(self.upscale_conv1(src) + feat_s1))
        up = F.gelu(self.upscale_conv2(up) + feat_s0)
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        _, cu, hu, wu = up.shape
        masks = (hyper @ up.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        iou = self.iou_prediction_head(iou_token)
        obj_score = self.pred_obj_score_head(tokens[:, 0])

        if multimask:
            return masks[:, 1:], iou[:, 1:], mask_tokens[:, 1:], obj_score
        if self.cfg.dynamic_multimask_via_stability and not self.training:
            masks, iou = self._pick_stable(masks, iou)
        else:
            masks, iou = masks[:, :1], iou[:, :1]
        return masks, iou, mask_tokens[:, :1], obj_score

    def _pick_stable(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output: keep token 0's mask when it is stable under a +-delta change of
        threshold, else the multimask output with the highest predicted IoU."""
        delta = self.cfg.dynamic_multimask_stability_delta
        single, single_iou = masks[:, :1], iou[:, :1]
        flat = single.flatten(-2)
        inter = (flat > delta).sum(-1).float()
        union = (flat > -delta).sum(-1).float()
        stability = torch.where(union > 0, inter / union, torch.ones_like(union))
        best = iou[:, 1:].argmax(-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_mask = masks[:, 1:][rows, best].unsqueeze(1)
        best_iou = iou[:, 1:][rows, best].unsqueeze(1)
        stable = stability >= self.cfg.dynamic_multimask_stability_thresh  # (B, 1)
        return (
            torch.where(stable[..., None, None], single, best_mask),
            torch.where(stable, single_iou, best_iou),
        )
