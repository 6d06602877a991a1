"""The two-way transformer of the SAM mask decoder: prompt tokens and image tokens attend to each
other in turn (SAM, Kirillov et al. 2023, Fig. 14).

Tokens are (B, N, C); the image is flattened to (B, H*W, C). This is the plain network; the
runtime's rewritten form (``runtime/fast_decoder.py``) is parity-tested against it.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .layers import FeedForward


class Attention(nn.Module):
    """Multi-head attention whose inner width may be ``dim // downsample_rate``; keys and values
    may have their own width ``kv_dim``."""

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
        """(B, N, inner) -> (B, heads, N, inner / heads)."""
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
    """Self-attention on tokens, tokens -> image, MLP on tokens, image -> tokens; each step is
    added back and layer-normalised. The first block's self-attention has no positional
    encoding and no residual (``skip_first_pe``)."""

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

    def attend_tokens(self, tokens: torch.Tensor, token_pe: torch.Tensor) -> torch.Tensor:
        """The tokens' self-attention step (B, N, C) -> (B, N, C), added back and normalised."""
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        return self.layer_norm1(tokens)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor,
                image_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens, token_pe: (B, N, C); image, image_pe: (B, HW, C). Returns both updated."""
        tokens = self.attend_tokens(tokens, token_pe)
        q, k = tokens + token_pe, image + image_pe
        tokens = self.layer_norm2(tokens + self.cross_attn_token_to_image(q, k, image))
        tokens = self.layer_norm3(tokens + self.mlp(tokens))
        q, k = tokens + token_pe, image + image_pe
        image = self.layer_norm4(image + self.cross_attn_image_to_token(k, q, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, num_heads, mlp_dim, downsample_rate, skip_first_pe=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.layer_norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: (B, C, H, W); image_pe: (B or 1, C, H, W); tokens: (B, N, C) (they are also
        their own positional encoding). Returns tokens (B, N, C) and image (B, HW, C)."""
        b = image.shape[0]
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2).expand(b, -1, -1)
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        q, k = tokens + token_pe, image + image_pe
        tokens = self.layer_norm_final_attn(tokens + self.final_attn_token_to_image(q, k, image))
        return tokens, image
