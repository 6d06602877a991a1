"""The two-way transformer of the SAM mask decoder: prompt tokens and image tokens
attend to each other in turn.

Tokens are (B, N, C); the image is flattened to (B, H*W, C).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from .layers import FeedForward


class Attention(nn.Module):
    """Multi-head attention whose inner width may be ``dim // downsample_rate``."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1, kv_dim: int | None = None) -> None:
        super().__init__()
        inner = dim // downsample_rate
        if inner % num_heads:
            raise ValueError("num_heads must divide dim // downsample_rate")
        kv_dim = dim if kv_dim is None else kv_dim
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(kv_dim, inner)
        self.v_proj = nn.Linear(kv_dim, inner)
        self.o_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def project(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, N, C) inputs -> per-head (B, heads, N, C/heads) queries, keys, values."""
        return self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Per-head q, k, v -> (B, N, dim) after the output projection."""
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, c = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, n, h * c))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(*self.project(q, k, v))


class TwoWayBlock(nn.Module):
    """Self-attention on tokens, tokens->image, MLP on tokens, image->tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim, dim, depth=2)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.layer_norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate)
        self.skip_first_pe = skip_first_pe

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor,
        image_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        image_q: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_kv: the token->image keys and values of ``image`` (``image_keys_values``) and
        image_q: the image->token queries of ``image``, when the caller has them already
        (in the first layer they depend on the image only)."""
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.layer_norm1(tokens)

        attn = self.cross_attn_token_to_image
        if image_kv is None:
            image_kv = self.image_keys_values(image, image_pe)
        tokens = self.layer_norm2(tokens + attn.attend(attn._heads(attn.q_proj(tokens + token_pe)), *image_kv))
        tokens = self.layer_norm3(tokens + self.mlp(tokens))

        back = self.cross_attn_image_to_token
        if image_q is None:
            image_q = self.image_queries(image, image_pe)
        q = tokens + token_pe
        image = self.layer_norm4(image + back.attend(image_q, back._heads(back.k_proj(q)), back._heads(back.v_proj(tokens))))
        return tokens, image

    def image_queries(self, image: torch.Tensor, image_pe: torch.Tensor) -> torch.Tensor:
        """Per-head queries of the image->token attention for image tokens (B, HW, C)."""
        back = self.cross_attn_image_to_token
        return back._heads(back.q_proj(image + image_pe))

    def image_keys_values(self, image: torch.Tensor, image_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head keys and values of the token->image attention for image tokens (B, HW, C)."""
        attn = self.cross_attn_token_to_image
        return attn._heads(attn.k_proj(image + image_pe)), attn._heads(attn.v_proj(image))


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, num_heads, mlp_dim, downsample_rate, skip_first_pe=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.layer_norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor,
        context: "ImageContext | None" = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe: (B, C, H, W); tokens: (B, N, C). Returns tokens (B, N, C), image (B, HW, C).

        context: ``image_context(image, image_pe)`` computed earlier for the same image (rows
        may be broadcast views); then ``image`` and ``image_pe`` are not read.
        """
        if context is None:
            context = self.image_context(image, image_pe)
        image, image_pe = context.image, context.image_pe
        token_pe = tokens
        for i, layer in enumerate(self.layers):
            first = i == 0
            tokens, image = layer(tokens, image, token_pe, image_pe, context.first_kv if first else None,
                                  context.first_q if first else None)
        q, k = tokens + token_pe, image + image_pe
        tokens = self.layer_norm_final_attn(tokens + self.final_attn_token_to_image(q, k, image))
        return tokens, image

    def image_context(self, image: torch.Tensor, image_pe: torch.Tensor) -> "ImageContext":
        """The prompt-independent part of a decoder pass: flattened image tokens and their
        first-layer keys/values. image, image_pe: (B, C, H, W) (image_pe may have B = 1)."""
        b = image.shape[0]
        flat = image.flatten(2).transpose(1, 2)
        pe = image_pe.flatten(2).transpose(1, 2).expand(b, -1, -1)
        first = self.layers[0]
        return ImageContext(flat, pe, first.image_keys_values(flat, pe), first.image_queries(flat, pe))


@dataclass
class ImageContext:
    """What a decoder pass needs from one image batch before any prompt: image tokens
    (B, HW, C), their positional encoding (B, HW, C), first-layer keys/values and image
    queries (B, h, HW, c)."""

    image: torch.Tensor
    image_pe: torch.Tensor
    first_kv: tuple[torch.Tensor, torch.Tensor]
    first_q: torch.Tensor

    def select(self, index: torch.Tensor) -> "ImageContext":
        """Rows ``index`` (one per object); a single image is broadcast without copies."""
        if self.image.shape[0] == 1:
            n = index.shape[0]
            ex = lambda t: t.expand(n, *t.shape[1:])  # noqa: E731
            return ImageContext(ex(self.image), ex(self.image_pe), (ex(self.first_kv[0]), ex(self.first_kv[1])),
                                ex(self.first_q))
        return ImageContext(self.image[index], self.image_pe[index], (self.first_kv[0][index], self.first_kv[1][index]),
                            self.first_q[index])
