"""The four graphs ``export_onnx`` writes, as thin nn.Modules around the plain network (``modeling/``).

Each wrapper holds the plain modules and only reshapes its inputs into the form they take, so that
every dimension that varies at run time is a tensor dimension of a graph input:

- ``ImageEncoderGraph``: pixels (B, 3, S, S) -> raw embedding (B, C, E, E), s0 (B, C/8, 4E, 4E),
  s1 (B, C/4, 2E, 2E) (the decoder's projections of the finer levels applied).
- ``MaskDecoderGraph``: the prompt encoder + mask decoder for N prompts on B images (``image_index``
  (N,) picks each prompt's image); points (N, P, 2) model-frame pixels with labels (N, P) as given
  (the caller appends the padding point, label -1), an optional mask (``has_mask_input`` 0/1). Outputs
  all four candidates and the single-mask choice (stability pick), so multimask is chosen by output.
- ``MemoryAttentionGraph``: the current frame (B, C, E, E) attends to F memory frames (B, F, T, 64)
  and P pointer tokens (B, P, 64).
- ``MemoryEncoderGraph``: the memory encoder + spatial perceiver: a frame's raw features and its
  high-resolution mask logits -> memory tokens (B, T, 64) and their positions.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modeling import EdgeTam
from ..modeling.mask_decoder import pick_stable


class ImageEncoderGraph(nn.Module):
    def __init__(self, model: EdgeTam) -> None:
        super().__init__()
        self.trunk = model.vision_encoder
        self.conv_s0, self.conv_s1 = model.mask_decoder.conv_s0, model.mask_decoder.conv_s1

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.trunk(pixels)
        return feats[-1], self.conv_s0(feats[0]), self.conv_s1(feats[1])


class MaskDecoderGraph(nn.Module):
    def __init__(self, model: EdgeTam) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.register_buffer("dense_pe", model.dense_pe().detach().clone(), persistent=False)

    def forward(self, image_embed: torch.Tensor, high_res_0: torch.Tensor, high_res_1: torch.Tensor,
                image_index: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pe = self.prompt_encoder
        sparse = pe.embed_points(point_coords, point_labels)
        n = point_coords.shape[0]
        has = has_mask_input.reshape(1, 1, 1, 1).to(image_embed.dtype)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has * pe.mask_embed(mask_input) + (1 - has) * no_mask
        embed = image_embed.index_select(0, image_index)
        high = (high_res_0.index_select(0, image_index), high_res_1.index_select(0, image_index))
        dec = self.mask_decoder
        # all candidates, as MaskDecoder.forward computes them before choosing (multimask=True keeps 1:)
        b, c, h, w = embed.shape
        tokens = torch.cat([dec.output_tokens(n), sparse.to(embed.dtype)], dim=1)
        tokens, image = dec.transformer(embed + dense, self.dense_pe, tokens)
        mask_tokens = tokens[:, 2:2 + dec.num_mask_tokens]
        upscaled = dec.upscale(image.transpose(1, 2).reshape(b, c, h, w), high)
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], 1)
        masks = (hyper @ upscaled.flatten(2)).view(b, dec.num_mask_tokens, 4 * h, 4 * w)
        iou = dec.iou_prediction_head(tokens[:, 1])
        obj = dec.pred_obj_score_head(tokens[:, 0])
        cfg = dec.cfg
        if cfg.dynamic_multimask_via_stability:
            single, single_iou = pick_stable(masks, iou, cfg.dynamic_multimask_stability_delta,
                                             cfg.dynamic_multimask_stability_thresh)
        else:
            single, single_iou = masks[:, :1], iou[:, :1]
        return masks, iou, mask_tokens, obj, single, single_iou


class MemoryAttentionGraph(nn.Module):
    def __init__(self, model: EdgeTam) -> None:
        super().__init__()
        self.attention = model.memory_attention

    def forward(self, current: torch.Tensor, current_pos: torch.Tensor, frame_memory: torch.Tensor,
                frame_memory_pos: torch.Tensor, pointers: torch.Tensor, pointers_pos: torch.Tensor) -> torch.Tensor:
        num_frames, num_pointer_tokens = frame_memory.shape[1], pointers.shape[1]
        memory = torch.cat([frame_memory.flatten(1, 2), pointers], 1)
        memory_pos = torch.cat([frame_memory_pos.flatten(1, 2), pointers_pos], 1)
        return self.attention(current, current_pos, memory, memory_pos, num_frames, num_pointer_tokens)


class MemoryEncoderGraph(nn.Module):
    """``EdgeTam.encode_memory`` with ``binarize`` as an input (1 = threshold the mask at 0, 0 =
    its sigmoid), so that one graph serves both."""

    def __init__(self, model: EdgeTam) -> None:
        super().__init__()
        self.memory_encoder = model.memory_encoder
        self.perceiver = model.spatial_perceiver
        self.occlusion = model.occlusion_spatial_embedding_parameter
        mem = model.config.memory
        self.scale, self.bias = float(mem.sigmoid_scale), float(mem.sigmoid_bias)

    def forward(self, raw: torch.Tensor, high_res_logits: torch.Tensor, binarize: torch.Tensor,
                object_score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hard = (high_res_logits > 0).to(raw.dtype)
        soft = torch.sigmoid(high_res_logits).to(raw.dtype)
        mask = torch.where(binarize.reshape(1, 1, 1, 1) > 0, hard, soft) * self.scale + self.bias
        features, pos = self.memory_encoder(raw, mask)
        if self.occlusion is not None:
            absent = (object_score <= 0).to(features.dtype)[:, None, None, None]
            features = features + absent * self.occlusion.reshape(1, -1, 1, 1)
        return self.perceiver(features, pos)
