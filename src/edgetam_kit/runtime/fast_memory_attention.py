"""Memory attention for inference (a fast path of ``modeling.memory_attention``), built from the
plain module and equal to it up to float rounding (tests/test_fast_paths.py).

- The frame's memory-independent start (the first layer's self-attention and its rotated queries
  to the memory) is a ``FramePrefix``, computed once per frame and shared by every object tracked
  on it.
- The ReLU MLP and its residual add run as fused oneDNN linear kernels on CPU float32
  (``cpu_fusion``, with the plain ops as fallback).
- RoPE tables are made once per grid size and device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..modeling.memory_attention import MemoryAttention, MemoryAttentionLayer, RopeTables, rope_memory_keys
from ..modeling.position_encoding import apply_rope
from .cpu_fusion import linear_add, linear_relu


@dataclass
class FramePrefix:
    """The memory-independent start of memory attention for one frame, shared by every object
    tracked on it: the tokens after the first layer's self-attention (1, HW, C) and that layer's
    rotated queries to the memory (1, heads, HW, d)."""

    tokens: torch.Tensor
    queries: torch.Tensor


def _attend_self(layer: MemoryAttentionLayer, x: torch.Tensor, rope: RopeTables) -> torch.Tensor:
    h = layer.layer_norm1(x)
    q, k, v = layer.self_attn.project(h, h, h)
    return x + layer.self_attn.attend(apply_rope(q, *rope.query), apply_rope(k, *rope.query), v)


def _memory_queries(layer: MemoryAttentionLayer, x: torch.Tensor, rope: RopeTables) -> torch.Tensor:
    attn = layer.cross_attn_image
    return apply_rope(attn._heads(attn.q_proj(layer.layer_norm2(x))), *rope.query)


def _attend_memory(layer: MemoryAttentionLayer, x: torch.Tensor, q: torch.Tensor, memory: torch.Tensor,
                   memory_pos: torch.Tensor, rope: RopeTables, num_frames: int, num_pointer_tokens: int) -> torch.Tensor:
    attn = layer.cross_attn_image
    k = rope_memory_keys(attn._heads(attn.k_proj(memory + memory_pos)), rope.key, num_frames, num_pointer_tokens)
    v = attn._heads(attn.v_proj(memory))
    if q.shape[0] != k.shape[0]:  # one frame's queries shared by every object
        q = q.expand(k.shape[0], *q.shape[1:])
    return x + attn.attend(q, k, v)


def _feed_forward(layer: MemoryAttentionLayer, x: torch.Tensor) -> torch.Tensor:
    """``x + mlp(layer_norm3(x))``, the ReLU and the add fused into the linear layers on CPU float32."""
    mlp = layer.mlp
    return linear_add(linear_relu(layer.layer_norm3(x), mlp.up_proj), mlp.down_proj, x.contiguous())


class FastMemoryAttention(nn.Module):
    """``MemoryAttention`` with a shareable per-frame prefix and fused MLPs (an ``nn.Module`` so
    that ``torch.compile`` can take it); holds the plain module."""

    def __init__(self, plain: MemoryAttention) -> None:
        super().__init__()
        self.plain = plain
        self._tables: dict[tuple[int, str], RopeTables] = {}

    def tables(self, side: int, device: torch.device) -> RopeTables:
        key = (side, str(device))
        if key not in self._tables:
            self._tables[key] = self.plain.tables(side, device)
        return self._tables[key]

    def prefix(self, current: torch.Tensor, current_pos: torch.Tensor) -> FramePrefix:
        """``FramePrefix`` of a frame: current, current_pos (1, C, E, E)."""
        x = (current + 0.1 * current_pos).flatten(2).transpose(1, 2)
        rope = self.tables(current.shape[-2], current.device)
        first = self.plain.layers[0]
        x = _attend_self(first, x, rope)
        return FramePrefix(x, _memory_queries(first, x, rope))

    def forward(self, current: torch.Tensor, current_pos: torch.Tensor, memory: torch.Tensor,
                memory_pos: torch.Tensor, num_frames: int, num_pointer_tokens: int,
                prefix: FramePrefix | None = None) -> torch.Tensor:
        """As ``MemoryAttention.forward``; prefix: ``prefix(current, current_pos)`` computed once
        for the frame (B objects on one frame share it)."""
        b, c, h, w = current.shape
        rope = self.tables(h, current.device)
        if prefix is None:
            prefix = self.prefix(current, current_pos)
        first, *rest = self.plain.layers
        x = prefix.tokens.expand(b, -1, -1) if prefix.tokens.shape[0] != b else prefix.tokens
        x = _feed_forward(first, _attend_memory(first, x, prefix.queries, memory, memory_pos, rope, num_frames,
                                                num_pointer_tokens))
        for layer in rest:
            x = _attend_self(layer, x, rope)
            x = _attend_memory(layer, x, _memory_queries(layer, x, rope), memory, memory_pos, rope, num_frames,
                               num_pointer_tokens)
            x = _feed_forward(layer, x)
        return self.plain.layer_norm(x).transpose(1, 2).reshape(b, c, h, w)
