"""Small building blocks shared by the encoder and decoder modules."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class FeedForward(nn.Module):
    """An MLP of ``depth`` linear layers with ReLU between them.

    Parameters are named ``proj_in``, ``layers.{i}`` (the hidden-to-hidden ones) and
    ``proj_out`` so that checkpoints in the Hugging Face layout load unchanged.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, depth: int, sigmoid_output: bool = False) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("FeedForward depth must be >= 2")
        self.proj_in = nn.Linear(in_dim, hidden_dim)
        self.layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(depth - 2))
        self.proj_out = nn.Linear(hidden_dim, out_dim)
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.proj_in(x))
        for layer in self.layers:
            x = F.relu(layer(x))
        x = self.proj_out(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class RandomFourierEmbedding(nn.Module):
    """Positional encoding of (x, y) in [0, 1]^2 by a fixed random Gaussian projection.

    Output has ``2 * num_feats`` channels: ``sin`` then ``cos`` of ``2*pi*(2p-1) @ G``.
    """

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_embedding", torch.randn(2, num_feats))

    def forward(self, coords01: torch.Tensor) -> torch.Tensor:
        """coords01: (..., 2) as (x, y) normalised to [0, 1]. Returns (..., 2*num_feats)."""
        proj = (2.0 * coords01.to(self.positional_embedding.dtype) - 1.0) @ self.positional_embedding
        proj = 2.0 * torch.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def grid(self, side: int) -> torch.Tensor:
        """Dense encoding of a ``side`` x ``side`` grid of cell centres: (C, side, side)."""
        p = self.positional_embedding
        centres = (torch.arange(side, device=p.device, dtype=p.dtype) + 0.5) / side
        yy, xx = torch.meshgrid(centres, centres, indexing="ij")
        return self(torch.stack([xx, yy], dim=-1)).permute(2, 0, 1)
