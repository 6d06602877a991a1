"""Memory attention: the current frame's tokens (B, E*E, 256) attend to themselves
(RoPE over the E x E grid) and then to the memory bank (RoPE over each memory frame's
16x16 window-latent grid; global latents and object pointers take no rotation)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..runtime.cpu_fusion import linear_add, linear_relu
from .position_encoding import apply_rope, axial_rope
from .transformer import Attention


class _ReluMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.up_proj = nn.Linear(dim, hidden)
        self.down_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(linear_relu(x, self.up_proj))

    def residual(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``x + self(h)``, the ReLU and the add fused into the linear layers on CPU float32."""
        return linear_add(linear_relu(h, self.up_proj), self.down_proj, x.contiguous())


class MemoryAttentionLayer(nn.Module):
    def __init__(self, dim: int, mem_dim: int, mlp_dim: int, num_heads: int = 1) -> None:
        super().__init__()
        # q/k/v/o projections as in the decoder's attention; rotary encodings are applied here
        self.self_attn = Attention(dim, num_heads)
        self.cross_attn_image = Attention(dim, num_heads, kv_dim=mem_dim)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.mlp = _ReluMLP(dim, mlp_dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor, rope: "RopeTables",
                num_frames: int, num_pointer_tokens: int) -> torch.Tensor:
        x = self.attend_self(x, rope)
        x = self.attend_memory(x, self.memory_queries(x, rope), memory, memory_pos, rope, num_frames, num_pointer_tokens)
        return self.feed_forward(x)

    def attend_self(self, x: torch.Tensor, rope: "RopeTables") -> torch.Tensor:
        """x (B, HW, C) plus its rotary self-attention (memory-independent)."""
        h = self.layer_norm1(x)
        q, k, v = self.self_attn.project(h, h, h)
        q, k = apply_rope(q, *rope.query), apply_rope(k, *rope.query)
        return x + self.self_attn.attend(q, k, v)

    def memory_queries(self, x: torch.Tensor, rope: "RopeTables") -> torch.Tensor:
        """Rotated per-head queries (B, heads, HW, d) of the cross-attention to the memory."""
        attn = self.cross_attn_image
        return apply_rope(attn._heads(attn.q_proj(self.layer_norm2(x))), *rope.query)

    def attend_memory(self, x: torch.Tensor, q: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                      rope: "RopeTables", num_frames: int, num_pointer_tokens: int) -> torch.Tensor:
        """x plus the attention of its queries ``q`` (``memory_queries``) to the memory bank."""
        attn = self.cross_attn_image
        k, v = attn._heads(attn.k_proj(memory + memory_pos)), attn._heads(attn.v_proj(memory))
        k = _rope_memory_keys(k, rope.key, num_frames, num_pointer_tokens)
        if q.shape[0] != k.shape[0]:  # one frame's queries shared by every object
            q = q.expand(k.shape[0], *q.shape[1:])
        return x + attn.attend(q, k, v)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp.residual(x, self.layer_norm3(x))


@dataclass
class FramePrefix:
    """The memory-independent start of memory attention for one frame, shared by every
    object tracked on it: the tokens after the first layer's self-attention (1, HW, C) and
    that layer's rotated queries to the memory (1, heads, HW, d)."""

    tokens: torch.Tensor
    queries: torch.Tensor


def _rope_memory_keys(k: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor], num_frames: int,
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


class RopeTables:
    """cos/sin tables for the query grid (E x E) and the memory key grid (G x G)."""

    def __init__(self, dim: int, query_side: int, key_side: int, theta: float, device: torch.device) -> None:
        self.query = axial_rope(dim, query_side, query_side, theta, device)
        self.key = axial_rope(dim, key_side, key_side, theta, device)


class MemoryAttention(nn.Module):
    def __init__(self, dim: int = 256, mem_dim: int = 64, depth: int = 2, mlp_dim: int = 2048,
                 num_heads: int = 1, rope_theta: float = 10000.0, key_side: int = 16) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(dim, mem_dim, mlp_dim, num_heads) for _ in range(depth))
        self.layer_norm = nn.LayerNorm(dim)
        self.head_dim = dim // num_heads
        self.rope_theta = rope_theta
        self.key_side = key_side
        self._tables: dict[tuple, RopeTables] = {}

    def tables(self, side: int, device: torch.device) -> RopeTables:
        key = (side, str(device))
        if key not in self._tables:
            self._tables[key] = RopeTables(self.head_dim, side, self.key_side, self.rope_theta, device)
        return self._tables[key]

    def prefix(self, current: torch.Tensor, current_pos: torch.Tensor) -> FramePrefix:
        """``FramePrefix`` of a frame: current, current_pos (1, C, E, E)."""
        x = (current + 0.1 * current_pos).flatten(2).transpose(1, 2)
        rope = self.tables(current.shape[-2], current.device)
        first = self.layers[0]
        x = first.attend_self(x, rope)
        return FramePrefix(x, first.memory_queries(x, rope))

    def forward(self, current: torch.Tensor, current_pos: torch.Tensor, memory: torch.Tensor,
                memory_pos: torch.Tensor, num_frames: int, num_pointer_tokens: int,
                prefix: FramePrefix | None = None) -> torch.Tensor:
        """current, current_pos: (B, C, E, E); memory, memory_pos: (B, M, mem_dim) with
        M = num_frames * 512 + num_pointer_tokens. prefix: ``prefix(current, current_pos)``
        computed once for the frame (B objects on one frame share it). Returns the
        conditioned map (B, C, E, E)."""
        b, c, h, w = current.shape
        rope = self.tables(h, current.device)
        if prefix is None:
            prefix = self.prefix(current, current_pos)
        first, *rest = self.layers
        x = prefix.tokens.expand(b, -1, -1) if prefix.tokens.shape[0] != b else prefix.tokens
        x = first.feed_forward(first.attend_memory(x, prefix.queries, memory, memory_pos, rope, num_frames,
                                                   num_pointer_tokens))
        for layer in rest:
            x = layer(x, memory, memory_pos, rope, num_frames, num_pointer_tokens)
        return self.layer_norm(x).transpose(1, 2).reshape(b, c, h, w)
