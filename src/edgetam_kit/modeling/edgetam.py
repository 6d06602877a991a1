"""EdgeTAM, the image path: encoder -> (prompt encoder, mask decoder).

Tensor conventions: pixels (B, 3, S, S) normalised, S = ``config.image_size``;
prompt coordinates (x, y) in pixels of that S x S frame; E = S // 16.
The video modules (memory encoder, perceiver, memory attention) live beside these
in the tracker; this class holds what a single image needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import EdgeTamConfig
from .image_encoder import ImageEncoder
from .layers import RandomFourierEmbedding
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


@dataclass
class ImageFeatures:
    """Encoder output for B images.

    embed: (B, C, E, E) lowest-resolution features, no-memory embedding added.
    high_res: ((B, C/8, 4E, 4E), (B, C/4, 2E, 2E)) projected finer FPN levels.
    """

    embed: torch.Tensor
    high_res: tuple[torch.Tensor, torch.Tensor]

    def __len__(self) -> int:
        return self.embed.shape[0]

    def select(self, index: torch.Tensor) -> "ImageFeatures":
        """Features of images ``index`` (a 1-D long tensor), repeated as needed."""
        return ImageFeatures(self.embed.index_select(0, index), tuple(h.index_select(0, index) for h in self.high_res))


@dataclass
class DecoderOutput:
    """Per prompted object (N of them): K = 3 masks if multimask else 1.

    low_res_logits: (N, K, 4E, 4E); iou: (N, K) predicted IoU; object_score: (N,) logits
    (> 0 means an object is present); mask_tokens: (N, K, C).
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor
    mask_tokens: torch.Tensor


class EdgeTam(nn.Module):
    def __init__(self, config: EdgeTamConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.mask_decoder.dim
        if config.prompt_encoder.embed_dim != dim or config.image_encoder.d_model != dim:
            raise ValueError("image_encoder.d_model, prompt_encoder.embed_dim and mask_decoder.dim must be equal")
        self.vision_encoder = ImageEncoder(config.image_encoder)
        self.prompt_encoder = PromptEncoder(dim, config.image_size, config.prompt_encoder.mask_in_chans)
        self.mask_decoder = MaskDecoder(config.mask_decoder)
        self.shared_image_embedding = RandomFourierEmbedding(dim // 2)
        self.no_memory_embedding = nn.Parameter(torch.zeros(1, 1, dim))
        # Tensors of the video model (memory encoder, perceiver, ...) found in a checkpoint;
        # kept verbatim for the tracker. Keys are in ``video_tensors_layout`` ("hf" or "original").
        self.video_tensors: dict[str, torch.Tensor] = {}
        self.video_tensors_layout: str | None = None

    @property
    def device(self) -> torch.device:
        return self.no_memory_embedding.device

    @property
    def dtype(self) -> torch.dtype:
        return self.no_memory_embedding.dtype

    def encode_image(self, pixels: torch.Tensor) -> ImageFeatures:
        """pixels: (B, 3, S, S) normalised. One trunk + neck pass."""
        feats = self.vision_encoder(pixels)
        s0 = self.mask_decoder.conv_s0(feats[0])
        s1 = self.mask_decoder.conv_s1(feats[1])
        embed = feats[-1] + self.no_memory_embedding.reshape(1, -1, 1, 1)
        return ImageFeatures(embed, (s0, s1))

    def dense_pe(self) -> torch.Tensor:
        """(1, C, E, E) positional encoding of the embedding grid."""
        return self.shared_image_embedding.grid(self.config.embedding_size).unsqueeze(0)

    def decode(
        self,
        features: ImageFeatures,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_logits: torch.Tensor | None = None,
        multimask: bool = True,
        image_pe: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """Decode N objects against ``features`` (N images, or 1 image shared by all).

        coords: (N, P, 2) input-frame pixels (box corners first, labels 2 and 3), labels:
        (N, P); both may be None for a mask-only prompt. mask_logits: (N, 1, 4E, 4E).
        The padding point the network was trained with is appended here. ``image_pe`` is
        ``dense_pe()``, passed in by callers that decode many prompts per image.
        """
        if coords is not None:
            n = coords.shape[0]
            pad_xy = coords.new_zeros(n, 1, 2)
            pad_label = labels.new_full((n, 1), -1)
            sparse = self.prompt_encoder.embed_points(
                torch.cat([coords, pad_xy], 1), torch.cat([labels, pad_label], 1)
            )
        else:
            if mask_logits is None:
                raise ValueError("decode needs points, a box or a mask")
            n = mask_logits.shape[0]
            sparse = self.no_memory_embedding.new_zeros(n, 0, self.config.mask_decoder.dim)
        dense = self.prompt_encoder.embed_mask(mask_logits, n)
        if len(features) == 1 and n > 1:
            features = features.select(torch.zeros(n, dtype=torch.long, device=features.embed.device))
        masks, iou, tokens, obj = self.mask_decoder(
            features.embed, self.dense_pe() if image_pe is None else image_pe, features.high_res, sparse, dense,
            multimask,
        )
        return DecoderOutput(masks, iou, obj.squeeze(-1), tokens)
