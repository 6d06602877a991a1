"""Memory attention: the current frame's tokens (B, E*E, 256) attend to themselves (RoPE over
the E x E grid) and then to the memory bank (RoPE over each memory frame's 16x16 window-latent
grid; global latents and object pointers take no rotation), each step pre-normalised and added
back, then a ReLU MLP. The plain network; the runtime's form (``runtime/fast_memory_attention.py``:
the frame's memory-independent prefix shared by its objects, fused CPU kernels) is tested against it.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .position_encoding import apply_rope, axial_rope
from .transformer import Attention


class ReluMLP(nn.Module):
    """Linear -> ReLU -> linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.up_proj = nn.Linear(dim, hidden)
        self.down_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.relu(self.up_proj(x)))


class RopeTables:
    """cos/sin tables for the query grid (E x E) and the memory key grid (G x G)."""

    def __init__(self, dim: int, query_side: int, key_side: int, theta: float, device: torch.device) -> None:
        self.query = axial_rope(dim, query_side, query_side, theta, device)
        self.key = axial_rope(dim, key_side, key_side, theta, device)


def rope_memory_keys(k: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor], num_frames: int,
                     num_pointer_tokens: int) -> torch.Tensor:
    """k: (B, H, num_frames*T + P, D), each frame's T tokens = [global latents, grid latents];
    the grid latents (the last len(table) of each frame) are rotated, the rest is left alone."""
    if num_frames == 0:
        return k
    b, h, n, d = k.shape
    grid = table[0].shape[0]
    spatial = k[:, :, : n - num_pointer_tokens].reshape(b, h, num_frames, -1, d)
    rotated = apply_rope(spatial[:, :, :, -grid:], *table)
    spatial = torch.cat([spatial[:, :, :, :-grid], rotated], dim=3).reshape(b, h, -1, d)
    return torch.cat([spatial, k[:, :, n - num_pointer_tokens:]], dim=2)


class MemoryAttentionLayer(nn.Module):
    def __init__(self, dim: int, mem_dim: int, mlp_dim: int, num_heads: int = 1) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.cross_attn_image = Attention(dim, num_heads, kv_dim=mem_dim)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.mlp = ReluMLP(dim, mlp_dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor, rope: RopeTables,
                num_frames: int, num_pointer_tokens: int) -> torch.Tensor:
        """x: (B, HW, C); memory, memory_pos: (B, M, mem_dim). Returns x updated (B, HW, C)."""
        h = self.layer_norm1(x)
        q, k, v = self.self_attn.project(h, h, h)
        x = x + self.self_attn.attend(apply_rope(q, *rope.query), apply_rope(k, *rope.query), v)
        attn = self.cross_attn_image
        q = apply_rope(attn._heads(attn.q_proj(self.layer_norm2(x))), *rope.query)
        k = rope_memory_keys(attn._heads(attn.k_proj(memory + memory_pos)), rope.key, num_frames, num_pointer_tokens)
        x = x + attn.attend(q, k, attn._heads(attn.v_proj(memory)))
        return x + self.mlp(self.layer_norm3(x))


class MemoryAttention(nn.Module):
    def __init__(self, dim: int = 256, mem_dim: int = 64, depth: int = 2, mlp_dim: int = 2048,
                 num_heads: int = 1, rope_theta: float = 10000.0, key_side: int = 16) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(dim, mem_dim, mlp_dim, num_heads) for _ in range(depth))
        self.layer_norm = nn.LayerNorm(dim)
        self.head_dim = dim // num_heads
        self.rope_theta = rope_theta
        self.key_side = key_side

    def tables(self, side: int, device: torch.device) -> RopeTables:
        """RoPE tables for a ``side`` x ``side`` query grid."""
        return RopeTables(self.head_dim, side, self.key_side, self.rope_theta, device)

    def forward(self, current: torch.Tensor, current_pos: torch.Tensor, memory: torch.Tensor,
                memory_pos: torch.Tensor, num_frames: int, num_pointer_tokens: int) -> torch.Tensor:
        """current, current_pos: (B, C, E, E); memory, memory_pos: (B, M, mem_dim) with
        M = num_frames * 512 + num_pointer_tokens. Returns the conditioned map (B, C, E, E)."""
        b, c, h, w = current.shape
        rope = self.tables(h, current.device)
        x = (current + 0.1 * current_pos).flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = layer(x, memory, memory_pos, rope, num_frames, num_pointer_tokens)
        return self.layer_norm(x).transpose(1, 2).reshape(b, c, h, w)
