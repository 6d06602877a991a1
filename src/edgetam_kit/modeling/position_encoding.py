"""Fixed positional encodings used by the video path: 2-D sine encodings of feature maps
and axial rotary encodings (RoPE) for the memory attention."""

from __future__ import annotations

import math

import torch


def sine_encoding(h: int, w: int, channels: int, device: torch.device | None = None,
                  temperature: float = 10000.0) -> torch.Tensor:
    """(1, channels, h, w) sine/cosine encoding of normalised (y, x) positions.

    Half the channels encode y, half x; positions are 1..h (1..w) scaled to (0, 2*pi].
    """
    half = channels // 2
    ys = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    xs = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    eps = 1e-6
    ys = ys / (ys[-1] + eps) * 2 * math.pi
    xs = xs / (xs[-1] + eps) * 2 * math.pi
    dim_t = torch.arange(half, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)

    def enc(v: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, half): sin on even, cos on odd slots
        a = v[:, None] / dim_t
        return torch.stack([a[:, 0::2].sin(), a[:, 1::2].cos()], dim=2).flatten(1)

    pos_y = enc(ys)[:, None, :].expand(h, w, half)
    pos_x = enc(xs)[None, :, :].expand(h, w, half)
    return torch.cat([pos_y, pos_x], dim=2).permute(2, 0, 1).unsqueeze(0)


def axial_rope(dim: int, end_x: int, end_y: int, theta: float = 10000.0,
               device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables (end_x*end_y, dim/2) of a 2-D axial rotary encoding over a row-major
    grid: the first dim/4 frequency pairs rotate with x, the next dim/4 with y."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4, device=device)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32, device=device)
    tx, ty = t % end_x, torch.div(t, end_x, rounding_mode="floor")
    angles = torch.cat([torch.outer(tx, freqs), torch.outer(ty, freqs)], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (..., N, dim) by the angles of (N, dim/2)."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    return out.to(x.dtype)
