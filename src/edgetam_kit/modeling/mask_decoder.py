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


def high_res_tokens(high_res: tuple[torch.Tensor, torch.Tensor],
                    biases: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's skip features in the token layout of ``MaskDecoder.upscale_masks``:
    s0 (B, C/8, 4E, 4E) -> (B, E*E, 4, 4, C/8), s1 (B, C/4, 2E, 2E) -> (B, E*E, 4, C/4).
    ``biases`` (C/8,), (C/4,) are added per channel (the transposed convolutions' biases, so
    that their products can accumulate onto these). A batch-broadcast input (stride 0, one
    image for every prompt) is arranged once."""
    s0, s1 = high_res
    out = []
    for t, levels, bias in ((s0, 2, None if biases is None else biases[0]), (s1, 1, None if biases is None else biases[1])):
        n = t.shape[0]
        one = t[:1] if n > 1 and t.stride(0) == 0 else t
        bb, c, hh, ww = one.shape
        side = 2 ** levels
        e_h, e_w = hh // side, ww // side
        if levels == 2:  # rows 4i + 2di1 + di2, columns 4j + 2dj1 + dj2
            v = one.view(bb, c, e_h, 2, 2, e_w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1).reshape(bb, e_h * e_w, 4, 4, c)
        else:  # rows 2i + di, columns 2j + dj
            v = one.view(bb, c, e_h, 2, e_w, 2).permute(0, 2, 4, 3, 5, 1).reshape(bb, e_h * e_w, 4, c)
        if bias is not None:
            v = v + bias
        out.append(v.expand(n, *v.shape[1:]) if one is not t else v)
    return out[0], out[1]


def _accumulate(base: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``base + x @ w`` for x (B, R, I), w (I, O), base (B|1, R, O) (possibly a batch-broadcast
    view): one matrix product over all B*R rows, the base added in the same pass when B = 1."""
    b, r, i = x.shape
    if b == 1:
        return torch.addmm(base.reshape(r, -1), x.reshape(r, i), w).view(1, r, -1)
    out = torch.mm(x.reshape(b * r, i), w).view(b, r, w.shape[1])
    return out.add_(base)


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
        min_iou: float | None = None,
        best_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """image_embed, dense: (B, C, E, E); image_pe: (1, C, E, E); high_res: (B, C/8, 4E, 4E),
        (B, C/4, 2E, 2E); sparse: (B, N, C). All batch dims already equal B.

        context: ``image_context(image_embed + dense, image_pe)`` computed earlier (rows
        matching B); then ``dense`` is not used.
        min_iou (multimask only): masks are made only for the prompts with at least one
        predicted IoU above it (the IoU head does not need the masks); the last output then
        lists those prompts' rows and the masks have one row per listed prompt. Otherwise
        the last output is None and every prompt has masks.
        best_only (multimask only): keep, per prompt, only the candidate with the highest
        predicted IoU (K = 1). Only the masks returned are upscaled."""
        b = sparse.shape[0]
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], 0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse.to(out_tokens.dtype)], dim=1)
        c, h, w = image_embed.shape[1:]
        if context is None:
            context = self.transformer.image_context(image_embed + dense, image_pe)
        tokens, src = self.transformer(None, None, tokens, context)
        iou_token = tokens[:, 1]
        mask_tokens = tokens[:, 2 : 2 + self.num_mask_tokens]

        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        s0_t, s1_t = context.high_res_tokens if context.high_res_tokens is not None else self.skip_tokens(high_res)
        iou = self.iou_prediction_head(iou_token)
        obj_score = self.pred_obj_score_head(tokens[:, 0])
        # the candidates returned: tokens 1..3 (multimask; or the best of them), token 0
        # (single), or all four when single-mask output picks by stability
        stable_pick = not multimask and self.cfg.dynamic_multimask_via_stability and not self.training
        if multimask and best_only:
            pick = iou[:, 1:].argmax(-1, keepdim=True) + 1  # (B, 1)
            take = lambda t: t.gather(1, pick.view(b, 1, *[1] * (t.dim() - 2)).expand(b, 1, *t.shape[2:]))  # noqa: E731
            iou_out, tokens_out, hyper = take(iou), take(mask_tokens), take(hyper)
        elif multimask:
            iou_out, tokens_out, hyper = iou[:, 1:], mask_tokens[:, 1:], hyper[:, 1:]
        elif not stable_pick:
            iou_out, tokens_out, hyper = iou[:, :1], mask_tokens[:, :1], hyper[:, :1]
        rows = None
        if multimask and min_iou is not None:
            rows = (iou[:, 1:].amax(-1) > min_iou).nonzero().squeeze(1)
            src, hyper = src[rows], hyper[rows]
            s0_t, s1_t = (t if t.shape[0] == 1 or t.stride(0) == 0 else t[rows] for t in (s0_t, s1_t))
        if src.shape[0]:
            masks = self.upscale_masks(src, s0_t, s1_t, hyper, h, w)
        else:  # no prompt passed min_iou
            masks = src.new_zeros(0, hyper.shape[1], 4 * h, 4 * w)

        if not stable_pick:
            return masks, iou_out, tokens_out, obj_score, rows
        masks, iou = self._pick_stable(masks, iou)
        return masks, iou, mask_tokens[:, :1], obj_score, None

    def skip_tokens(self, high_res: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``high_res_tokens`` with the upscaling convolutions' biases added: what
        ``upscale_masks`` accumulates its two products onto. Prompt-independent (once per image)."""
        return high_res_tokens(high_res, (self.upscale_conv2.bias, self.upscale_conv1.bias))

    def _token_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The transposed convolutions' weights as (C_in, 4*C_out) matrices, columns ordered
        (di, dj, c_out); rebuilt only when the weights change (new tensor, in-place update, .to())."""
        c1, c2 = self.upscale_conv1.weight, self.upscale_conv2.weight
        key = (c1.data_ptr(), c1._version, c2.data_ptr(), c2._version, c1.dtype, c1.device)
        cached = getattr(self, "_token_weight_cache", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                mats = (c1.permute(0, 2, 3, 1).reshape(c1.shape[0], -1).contiguous(),
                        c2.permute(0, 2, 3, 1).reshape(c2.shape[0], -1).contiguous())
            cached = (key, mats)
            self._token_weight_cache = cached
        return cached[1]

    def upscale_masks(self, src: torch.Tensor, s0_t: torch.Tensor, s1_t: torch.Tensor, hyper: torch.Tensor,
                      h: int, w: int) -> torch.Tensor:
        """The two stride-2 transposed convolutions, the skip features and the hypernetwork
        product, computed on image tokens instead of NCHW maps.

        A 2x2 / stride-2 transposed convolution maps each input pixel to its own 2x2 output
        block: a matrix product per token. Keeping the tokens (B, HW, ...) with the sub-pixel
        offsets as extra axes avoids NCHW round trips; only the K masks are put back in image
        order at the end. Each product accumulates onto the skip features (which carry the
        convolution's bias). Equal to the NCHW computation up to float rounding.
        src: (B, HW, C); s1_t: (B|1, HW, 4, C/4); s0_t: (B|1, HW, 4, 4, C/8) (``skip_tokens``);
        hyper: (B, K, C/8). Returns (B, K, 4h, 4w).
        """
        b, hw, c = src.shape
        if self.training or torch.is_grad_enabled():  # weights must stay in the autograd graph
            c1, c2 = self.upscale_conv1.weight, self.upscale_conv2.weight
            w1 = c1.permute(0, 2, 3, 1).reshape(c1.shape[0], -1)
            w2 = c2.permute(0, 2, 3, 1).reshape(c2.shape[0], -1)
        else:
            w1, w2 = self._token_weights()
        y = _accumulate(s1_t.reshape(s1_t.shape[0], hw, -1), src, w1).view(b, hw, 4, -1)
        ln = self.upscale_layer_norm
        y = F.gelu(F.layer_norm(y, (y.shape[-1],), ln.weight, ln.bias, ln.eps))
        z = _accumulate(s0_t.reshape(s0_t.shape[0], hw * 4, -1), y.view(b, hw * 4, -1), w2)
        z = F.gelu(z).view(b, hw * 16, -1)  # (B, HW*16, C/8): token, first 2x2 offset, second 2x2 offset
        k = hyper.shape[1]
        m = torch.bmm(z, hyper.transpose(1, 2))  # (B, HW*16, K)
        # (i, j, di1, dj1, di2, dj2) -> row 4i + 2di1 + di2, column 4j + 2dj1 + dj2
        m = m.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return m.reshape(b, k, 4 * h, 4 * w)

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
