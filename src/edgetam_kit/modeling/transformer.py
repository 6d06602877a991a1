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


# The decoder's cross-attentions pair a few prompt tokens (N ~ 7) with many image tokens
# (E*E = 4096). Projecting the 4096 image tokens (keys/values, or queries/outputs) costs
# 4096 x C x C/2 multiply-adds each; moving the projections to the few tokens' side gives the
# same attention with ~h*N columns instead. Exact algebra (the key bias adds a constant per
# query row, which softmax ignores; value bias passes through since attention rows sum to 1);
# only the float rounding order differs.
def few_attend_to_many(attn: Attention, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``attn(queries, keys, values)`` for queries (B, N, C) and many keys/values (B, M, C)
    without projecting the keys or values. A batch-broadcast ``keys``/``values`` (stride 0,
    one image for all prompts) is used as one matrix."""
    b, n, _ = queries.shape
    h = attn.num_heads
    inner = attn.q_proj.out_features
    d = inner // h
    q = attn._heads(attn.q_proj(queries))  # (B, h, N, d)
    a = (q @ attn.k_proj.weight.view(h, d, -1)) * d ** -0.5  # (B, h, N, Ckv): queries in key-input space
    rows = a.reshape(b, h * n, -1)
    if keys.shape[0] == 1 or keys.stride(0) == 0:  # one image for every prompt: one GEMM
        probs = (rows.reshape(b * h * n, -1) @ keys[0].transpose(0, 1)).softmax(-1)
        mixed = (probs @ values[0]).view(b, h, n, -1) if values.stride(0) == 0 or values.shape[0] == 1 else \
            (probs.view(b, h * n, -1) @ values).view(b, h, n, -1)
    else:
        probs = (rows @ keys.transpose(1, 2)).softmax(-1)  # (B, h*N, M)
        mixed = (probs @ values).view(b, h, n, -1)  # (B, h, N, Ckv): attention-weighted inputs
    out = mixed @ attn.v_proj.weight.view(h, d, -1).transpose(1, 2) + attn.v_proj.bias.view(h, 1, d)
    return attn.o_proj(out.transpose(1, 2).reshape(b, n, inner))


def softmax_few(x: torch.Tensor) -> torch.Tensor:
    """``x.softmax(-1)`` for a short last dimension (the few prompt tokens, N ~ 8).

    PyTorch's CPU softmax vectorises along the reduced dimension, which is only N long here:
    over the decoder's 4096 x heads rows it is ~6x slower than these four whole-tensor passes
    (max, subtract and exp, sum, divide). Same arithmetic, float rounding aside; in place on
    its own intermediates when no gradient is recorded."""
    if torch.is_grad_enabled():
        e = (x - x.amax(-1, keepdim=True)).exp()
        return e / e.sum(-1, keepdim=True)
    e = (x - x.amax(-1, keepdim=True)).exp_()
    return e.div_(e.sum(-1, keepdim=True))


def _output_values(attn: Attention, v: torch.Tensor) -> torch.Tensor:
    """Per-head values (B, h, N, d) -> (B, h*N, Cout) already output-projected, with the
    output bias spread over the heads (each head's attention row sums to 1, so the h rows
    of a query add up to the bias once)."""
    b, h, n, _ = v.shape
    wo = attn.o_proj.weight.view(-1, h, v.shape[-1]).permute(1, 2, 0)  # (h, d, Cout)
    u = (v @ wo).reshape(b, h * n, -1)
    return u if attn.o_proj.bias is None else u + attn.o_proj.bias / h


def many_attend_to_few(attn: Attention, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       residual: torch.Tensor | None = None, in_place: bool = False) -> torch.Tensor:
    """``residual + attn(queries, keys, values)`` for many queries (B, M, C) and few
    keys/values (B, N, C) without projecting the queries or the M outputs."""
    b, m, c = queries.shape
    n = keys.shape[1]
    h = attn.num_heads
    inner = attn.q_proj.out_features
    d = inner // h
    k = attn._heads(attn.k_proj(keys))  # (B, h, N, d)
    kt = k.transpose(2, 3) * d ** -0.5  # (B, h, d, N)
    wq = attn.q_proj.weight.view(h, d, c).transpose(1, 2)  # (h, C, d)
    mq = (wq @ kt).permute(0, 2, 1, 3).reshape(b, c, h * n)  # (B, C, h*N)
    cq = (attn.q_proj.bias.view(h, 1, d) @ kt).reshape(b, 1, h * n)  # (B, 1, h*N)
    probs = torch.baddbmm(cq, queries, mq) if queries.stride(0) != 0 else queries @ mq + cq
    probs = softmax_few(probs.view(b, m, h, n)).view(b, m, h * n)
    return _mix(probs, _output_values(attn, attn._heads(attn.v_proj(values))), residual, in_place)


def queries_attend_to_few(attn: Attention, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                          residual: torch.Tensor | None = None) -> torch.Tensor:
    """``residual + attn(...)`` for many queries already projected, q: (B, M, inner)
    (``TwoWayBlock.image_queries``), and few keys/values (B, N, C).

    All heads' scores come from one product with a block-diagonal key matrix (inner, h*N)
    (head i's keys in rows i*d..(i+1)*d, columns i*N..(i+1)*N), which lands them in the
    (B, M, h*N) layout the value mixing needs; the M outputs are mixed from the N
    output-projected values instead of being projected one by one."""
    b, m, inner = q.shape
    h = attn.num_heads
    d = inner // h
    k = attn._heads(attn.k_proj(keys)) * d ** -0.5  # (B, h, N, d)
    n = k.shape[2]
    eye = torch.eye(h, dtype=k.dtype, device=k.device)
    blocks = (eye[None, :, None, :, None] * k.transpose(2, 3)[:, :, :, None, :]).reshape(b, inner, h * n)
    scores = q @ blocks if q.stride(0) != 0 else (q[0] @ blocks.transpose(0, 1).reshape(inner, b * h * n)).view(
        m, b, h * n).transpose(0, 1)
    probs = softmax_few(scores.reshape(b, m, h, n)).view(b, m, h * n)
    return _mix(probs, _output_values(attn, attn._heads(attn.v_proj(values))), residual)


def _mix(probs: torch.Tensor, u: torch.Tensor, residual: torch.Tensor | None, in_place: bool = False) -> torch.Tensor:
    """probs (B, M, h*N) @ u (B, h*N, Cout), plus ``residual`` (B, M, Cout) in the same pass
    (``in_place``: the caller owns ``residual`` and it may be overwritten when no gradient
    is recorded)."""
    if residual is None:
        return probs @ u
    if residual.stride(0) == 0 and residual.shape[0] > 1:  # one image for every prompt
        return torch.bmm(probs, u).add_(residual)
    if (in_place and not torch.is_grad_enabled() and residual.is_contiguous()
            and not torch.is_autocast_enabled(residual.device.type)):
        return residual.baddbmm_(probs, u)
    return torch.baddbmm(residual, probs, u)


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
        image_q: torch.Tensor | None = None, owns_image: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_kv: the token->image keys and values of ``image`` (``image_keys_values``) and
        image_q: the image->token queries of ``image``, when the caller has them already
        (in the first layer they depend on the image only). owns_image: ``image`` is the
        caller's own intermediate and may be overwritten (no gradient recorded)."""
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.layer_norm1(tokens)

        attn = self.cross_attn_token_to_image
        keyed = None
        if image_kv is None:
            keyed = image + image_pe  # keys of both cross-attentions (the image does not change between them)
            update = few_attend_to_many(attn, tokens + token_pe, keyed, image)
        else:
            update = attn.attend(attn._heads(attn.q_proj(tokens + token_pe)), *image_kv)
        tokens = self.layer_norm2(tokens + update)
        tokens = self.layer_norm3(tokens + self.mlp(tokens))

        back = self.cross_attn_image_to_token
        q = tokens + token_pe
        if image_q is None:
            keyed = image + image_pe if keyed is None else keyed
            image = many_attend_to_few(back, keyed, q, tokens, residual=image, in_place=owns_image)
        else:
            image = queries_attend_to_few(back, image_q, q, tokens, residual=image)
        image = self.layer_norm4(image)
        return tokens, image

    def image_queries(self, image: torch.Tensor, image_pe: torch.Tensor) -> torch.Tensor:
        """Queries (B, HW, inner) of the image->token attention for image tokens (B, HW, C)."""
        back = self.cross_attn_image_to_token
        return back.q_proj(image + image_pe)

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
                                  context.first_q if first else None, owns_image=not first)
        update = few_attend_to_many(self.final_attn_token_to_image, tokens + token_pe, image + image_pe, image)
        tokens = self.layer_norm_final_attn(tokens + update)
        return tokens, image

    def image_context(self, image: torch.Tensor, image_pe: torch.Tensor) -> "ImageContext":
        """The prompt-independent part of a decoder pass: flattened image tokens and their
        first-layer keys/values. image, image_pe: (B, C, H, W) (image_pe may have B = 1)."""
        b = image.shape[0]
        # Contiguous (B, HW, C) rows: every prompt's pass reads them several times.
        flat = image.flatten(2).transpose(1, 2).contiguous()
        pe = image_pe.flatten(2).transpose(1, 2).contiguous().expand(b, -1, -1)
        first = self.layers[0]
        return ImageContext(flat, pe, first.image_keys_values(flat, pe), first.image_queries(flat, pe))


@dataclass
class ImageContext:
    """What a decoder pass needs from one image batch before any prompt: image tokens
    (B, HW, C), their positional encoding (B, HW, C), first-layer keys/values
    (B, h, HW, c) and image queries (B, HW, inner)."""

    image: torch.Tensor
    image_pe: torch.Tensor
    first_kv: tuple[torch.Tensor, torch.Tensor]
    first_q: torch.Tensor
    high_res_tokens: tuple[torch.Tensor, torch.Tensor] | None = None  # MaskDecoder.skip_tokens

    def select(self, index: torch.Tensor) -> "ImageContext":
        """Rows ``index`` (one per object); a single image is broadcast without copies."""
        if self.image.shape[0] == 1:
            n = index.shape[0]
            ex = lambda t: t.expand(n, *t.shape[1:])  # noqa: E731
            hr = None if self.high_res_tokens is None else tuple(ex(t) for t in self.high_res_tokens)
            return ImageContext(ex(self.image), ex(self.image_pe), (ex(self.first_kv[0]), ex(self.first_kv[1])),
                                ex(self.first_q), hr)
        hr = None if self.high_res_tokens is None else tuple(t[index] for t in self.high_res_tokens)
        return ImageContext(self.image[index], self.image_pe[index], (self.first_kv[0][index], self.first_kv[1][index]),
                            self.first_q[index], hr)
