"""Prompt encoder: points and box corners become sparse tokens, a low-resolution mask
becomes a dense embedding.

Coordinates given to this module are (x, y) in pixels of the model's square input
(``image_size`` on a side). Point labels: 1 positive, 0 negative, 2/3 the top-left /
bottom-right corners of a box, -1 "not a point" (padding).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .layers import LayerNorm2d, RandomFourierEmbedding


class MaskEmbedding(nn.Module):
    """(B, 1, 4E, 4E) mask logits -> (B, C, E, E) dense embedding (E = embedding side)."""

    def __init__(self, embed_dim: int, mask_in_chans: int) -> None:
        super().__init__()
        mid = mask_in_chans // 4
        self.conv1 = nn.Conv2d(1, mid, kernel_size=2, stride=2)
        self.layer_norm1 = LayerNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mask_in_chans, kernel_size=2, stride=2)
        self.layer_norm2 = LayerNorm2d(mask_in_chans)
        self.conv3 = nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.layer_norm1(self.conv1(masks)))
        x = F.gelu(self.layer_norm2(self.conv2(x)))
        return self.conv3(x)


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int, image_size: int, mask_in_chans: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.embedding_size = image_size // 16
        self.shared_embedding = RandomFourierEmbedding(embed_dim // 2)
        self.mask_embed = MaskEmbedding(embed_dim, mask_in_chans)
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self.point_embed = nn.Embedding(4, embed_dim)  # negative, positive, box corner 1, box corner 2
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords: (B, N, 2) input-frame pixels; labels: (B, N) ints. Returns (B, N, C).

        The caller appends the padding point (label -1) that the model was trained with.
        """
        pe = self.shared_embedding((coords + 0.5) / self.image_size)
        labels = labels[..., None]
        pe = torch.where(labels == -1, self.not_a_point_embed.weight.to(pe.dtype), pe)
        return pe + self.point_embed(labels.squeeze(-1).clamp(min=0)) * (labels >= 0)

    def embed_mask(self, mask_logits: torch.Tensor | None, batch: int) -> torch.Tensor:
        """mask_logits: (B, 1, 4E, 4E) or None. Returns (B, C, E, E)."""
        if mask_logits is not None:
            return self.mask_embed(mask_logits)
        e = self.embedding_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, e, e)
