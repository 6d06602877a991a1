"""2-D spatial perceiver: compresses a (B, 64, E, E) memory map into 512 tokens —
256 global latents that attend to the whole map and 256 window latents, one per cell
of a 16x16 grid, each attending to its own window — so a memory frame costs 512
tokens instead of E*E."""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .position_encoding import sine_encoding


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.view(b, t, n, c // n).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, c = x.shape
    return x.transpose(1, 2).reshape(b, t, h * c)


class LatentAttention(nn.Module):
    """Bias-free attention; ``kv=None`` means self-attention on the queries."""

    def __init__(self, dim: int, head_dim: int, heads: int) -> None:
        super().__init__()
        inner = head_dim * heads
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.k_proj = nn.Linear(dim, inner, bias=False)
        self.v_proj = nn.Linear(dim, inner, bias=False)
        self.o_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        k, v = _heads(self.k_proj(kv), self.heads), _heads(self.v_proj(kv), self.heads)
        if pos is not None:
            p = _heads(pos, self.heads)
            k, v = k + p, v + p
        out = F.scaled_dot_product_attention(_heads(self.q_proj(q), self.heads), k, v)
        return self.o_proj(_merge(out))


class LatentMLP(nn.Module):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim)
        self.up_proj = nn.Linear(dim, dim * mult, bias=False)
        self.down_proj = nn.Linear(dim * mult, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(self.layer_norm(x))))


class PerceiverLayer(nn.Module):
    def __init__(self, dim: int, head_dim: int, heads: int, mult: int) -> None:
        super().__init__()
        self.layer_norm_latents = nn.LayerNorm(dim)
        self.layer_norm_input = nn.LayerNorm(dim)
        self.cross_attention = LatentAttention(dim, head_dim, heads)
        self.mlp = LatentMLP(dim, mult)
        self.layer_norm_self = nn.LayerNorm(dim)
        self.self_attention = LatentAttention(dim, head_dim, heads)
        self.self_mlp = LatentMLP(dim, mult)

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        latents = latents + self.cross_attention(self.layer_norm_latents(latents), self.layer_norm_input(x), pos)
        latents = latents + self.mlp(latents)
        normed = self.layer_norm_self(latents)
        latents = latents + self.self_attention(normed, normed)
        return latents + self.self_mlp(latents)


class SpatialPerceiver(nn.Module):
    def __init__(self, dim: int = 64, depth: int = 2, head_dim: int = 64, heads: int = 1, mult: int = 4,
                 num_latents: int = 256, num_latents_2d: int = 256) -> None:
        super().__init__()
        self.latents_1d = nn.Parameter(torch.randn(num_latents, dim))
        self.latents_2d = nn.Parameter(torch.randn(num_latents_2d, dim))
        self.layers = nn.ModuleList(PerceiverLayer(dim, head_dim, heads, mult) for _ in range(depth))
        self.layer_norm = nn.LayerNorm(dim)
        self.grid = math.isqrt(num_latents_2d)
        if self.grid * self.grid != num_latents_2d:
            raise ValueError("num_latents_2d must be a square number")

    def forward(self, memory: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory, pos: (B, C, E, E). Returns tokens (B, L1 + L2, C) and their pos (B, L1 + L2, C):
        global latents first (pos 0), then window latents in row-major grid order (sine pos)."""
        b, c, h, w = memory.shape
        tokens = memory.flatten(2).transpose(1, 2)  # (B, HW, C)
        lat = self.latents_1d.unsqueeze(0).expand(b, -1, -1)
        kv_pos = pos.flatten(2).transpose(1, 2)
        for layer in self.layers:
            lat = layer(lat, tokens, kv_pos)
        global_latents = self.layer_norm(lat)

        g = self.grid
        ws = h // g
        windows = memory.permute(0, 2, 3, 1).reshape(b, g, ws, g, ws, c).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(b * g * g, ws * ws, c)  # one row per window
        lat2 = self.latents_2d.reshape(-1, 1, c).repeat(b, 1, 1)  # (B*G*G, 1, C)
        for layer in self.layers:
            lat2 = layer(lat2, windows, None)
        lat2 = lat2.reshape(b, g * g, c)
        pos2 = sine_encoding(g, g, c, device=memory.device).to(memory.dtype).flatten(2).transpose(1, 2).expand(b, -1, -1)
        out = torch.cat([global_latents, self.layer_norm(lat2)], dim=1)
        out_pos = torch.cat([torch.zeros_like(global_latents), pos2], dim=1)
        return out, out_pos
