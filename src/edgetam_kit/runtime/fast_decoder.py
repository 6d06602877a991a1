"""The mask decoder and its two-way transformer rewritten for inference (a fast path of
``modeling.mask_decoder`` / ``modeling.transformer``), built from the plain modules and equal to
them up to float rounding (tests/test_fast_paths.py).

What is rewritten, and why:
- The cross-attentions pair a few prompt tokens (N ~ 7) with many image tokens (E*E = 4096).
  Projecting the 4096 image tokens (keys/values, or queries/outputs) costs 4096 x C x C/2
  multiply-adds each; moving the projections to the few tokens' side gives the same attention
  with ~h*N columns instead (exact algebra: the key bias adds a constant per query row, which
  softmax ignores; the value bias passes through since attention rows sum to 1).
- Everything that depends on the image only (image tokens + no-mask embedding, positional
  encoding, first-layer keys/values and image queries, the skip features in token layout) is an
  ``ImageContext``, made once per image and reused by every click.
- "One image shared by N prompts" is explicit (``ImageContext.shared``): the prompts' rows are
  views of one image, and products over them run as one matrix product.
- The upscaling's two 2x2 / stride-2 transposed convolutions are per-token matrix products on
  the image tokens (no NCHW round trips), accumulated onto the skip features; only the masks
  returned are upscaled (``best_only``, ``min_iou``).
- Softmax over the few prompt tokens as four whole-tensor passes (``softmax_few``).
The weights are read when the runtime is built; a weight change rebuilds the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..modeling.mask_decoder import MaskDecoder, pick_stable
from ..modeling.transformer import Attention, TwoWayBlock, TwoWayTransformer


@dataclass
class ImageContext:
    """What a decoder pass needs from one image batch before any prompt: image tokens (B, HW, C),
    their positional encoding (B, HW, C), first-layer keys/values (B, h, HW, c), image queries
    (B, HW, inner) and the skip features in token layout. ``shared``: every row is a view of one
    image (one image decoded with many prompts)."""

    image: torch.Tensor
    image_pe: torch.Tensor
    first_kv: tuple[torch.Tensor, torch.Tensor]
    first_q: torch.Tensor
    high_res_tokens: tuple[torch.Tensor, torch.Tensor]
    shared: bool = False

    def __len__(self) -> int:
        return self.image.shape[0]

    def select(self, index: torch.Tensor) -> "ImageContext":
        """Rows ``index`` (one per object); a single image is broadcast without copies."""
        if self.image.shape[0] == 1:
            n = index.shape[0]
            ex = lambda t: t.expand(n, *t.shape[1:])  # noqa: E731
            return ImageContext(ex(self.image), ex(self.image_pe), (ex(self.first_kv[0]), ex(self.first_kv[1])),
                                ex(self.first_q), tuple(ex(t) for t in self.high_res_tokens), shared=n > 1)
        return ImageContext(self.image[index], self.image_pe[index], (self.first_kv[0][index], self.first_kv[1][index]),
                            self.first_q[index], tuple(t[index] for t in self.high_res_tokens))


def softmax_few(x: torch.Tensor) -> torch.Tensor:
    """``x.softmax(-1)`` for a short last dimension (the few prompt tokens, N ~ 8).

    PyTorch's CPU softmax vectorises along the reduced dimension, which is only N long here:
    over the decoder's 4096 x heads rows it is ~6x slower than these four whole-tensor passes
    (max, subtract and exp, sum, divide). Same arithmetic, float rounding aside; in place on its
    own intermediates when no gradient is recorded."""
    if torch.is_grad_enabled():
        e = (x - x.amax(-1, keepdim=True)).exp()
        return e / e.sum(-1, keepdim=True)
    e = (x - x.amax(-1, keepdim=True)).exp_()
    return e.div_(e.sum(-1, keepdim=True))


def few_attend_to_many(attn: Attention, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``attn(queries, keys, values)`` for queries (B, N, C) and many keys/values (B, M, C)
    without projecting the keys or values."""
    b, n, _ = queries.shape
    h = attn.num_heads
    inner = attn.q_proj.out_features
    d = inner // h
    q = attn._heads(attn.q_proj(queries))  # (B, h, N, d)
    a = (q @ attn.k_proj.weight.view(h, d, -1)) * d ** -0.5  # (B, h, N, Ckv): queries in key-input space
    probs = (a.reshape(b, h * n, -1) @ keys.transpose(1, 2)).softmax(-1)  # (B, h*N, M)
    mixed = (probs @ values).view(b, h, n, -1)  # (B, h, N, Ckv): attention-weighted inputs
    out = mixed @ attn.v_proj.weight.view(h, d, -1).transpose(1, 2) + attn.v_proj.bias.view(h, 1, d)
    return attn.o_proj(out.transpose(1, 2).reshape(b, n, inner))


def _output_values(attn: Attention, v: torch.Tensor) -> torch.Tensor:
    """Per-head values (B, h, N, d) -> (B, h*N, Cout) already output-projected, with the output
    bias spread over the heads (each head's attention row sums to 1, so the h rows of a query
    add up to the bias once)."""
    b, h, n, _ = v.shape
    wo = attn.o_proj.weight.view(-1, h, v.shape[-1]).permute(1, 2, 0)  # (h, d, Cout)
    u = (v @ wo).reshape(b, h * n, -1)
    return u if attn.o_proj.bias is None else u + attn.o_proj.bias / h


def _mix(probs: torch.Tensor, u: torch.Tensor, residual: torch.Tensor, shared: bool = False,
         in_place: bool = False) -> torch.Tensor:
    """``residual + probs @ u`` for probs (B, M, h*N), u (B, h*N, Cout), residual (B, M, Cout) in
    one pass. shared: ``residual``'s rows are views of one image; in_place: the caller owns
    ``residual`` and it may be overwritten when no gradient is recorded."""
    if shared:
        return torch.bmm(probs, u).add_(residual)
    if (in_place and not torch.is_grad_enabled() and residual.is_contiguous()
            and not torch.is_autocast_enabled(residual.device.type)):
        return residual.baddbmm_(probs, u)
    return torch.baddbmm(residual, probs, u)


def many_attend_to_few(attn: Attention, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       residual: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """``residual + attn(queries, keys, values)`` for many queries (B, M, C) and few keys/values
    (B, N, C) without projecting the queries or the M outputs."""
    b, m, c = queries.shape
    n = keys.shape[1]
    h = attn.num_heads
    d = attn.q_proj.out_features // h
    kt = attn._heads(attn.k_proj(keys)).transpose(2, 3) * d ** -0.5  # (B, h, d, N)
    wq = attn.q_proj.weight.view(h, d, c).transpose(1, 2)  # (h, C, d)
    mq = (wq @ kt).permute(0, 2, 1, 3).reshape(b, c, h * n)  # (B, C, h*N)
    cq = (attn.q_proj.bias.view(h, 1, d) @ kt).reshape(b, 1, h * n)  # (B, 1, h*N)
    probs = softmax_few(torch.baddbmm(cq, queries, mq).view(b, m, h, n)).view(b, m, h * n)
    return _mix(probs, _output_values(attn, attn._heads(attn.v_proj(values))), residual, in_place=in_place)


def queries_attend_to_few(attn: Attention, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                          residual: torch.Tensor, shared: bool = False) -> torch.Tensor:
    """``residual + attn(...)`` for many queries already projected, q: (B, M, inner) (the
    context's ``first_q``), and few keys/values (B, N, C).

    All heads' scores come from one product with a block-diagonal key matrix (inner, h*N) (head
    i's keys in rows i*d..(i+1)*d, columns i*N..(i+1)*N), which lands them in the (B, M, h*N)
    layout the value mixing needs. shared: ``q`` and ``residual`` are views of one image."""
    b, m, inner = q.shape
    h = attn.num_heads
    d = inner // h
    k = attn._heads(attn.k_proj(keys)) * d ** -0.5  # (B, h, N, d)
    n = k.shape[2]
    eye = torch.eye(h, dtype=k.dtype, device=k.device)
    blocks = (eye[None, :, None, :, None] * k.transpose(2, 3)[:, :, :, None, :]).reshape(b, inner, h * n)
    if shared:  # one GEMM over all prompts' keys
        scores = (q[0] @ blocks.transpose(0, 1).reshape(inner, b * h * n)).view(m, b, h * n).transpose(0, 1)
    else:
        scores = q @ blocks
    probs = softmax_few(scores.reshape(b, m, h, n)).view(b, m, h * n)
    return _mix(probs, _output_values(attn, attn._heads(attn.v_proj(values))), residual, shared=shared)


def _block(layer: TwoWayBlock, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor,
           image_pe: torch.Tensor, context: ImageContext | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer(tokens, image, token_pe, image_pe)``; ``context``: given for the first layer, whose
    image keys/values and queries depend on the image only (``image`` is then the context's)."""
    tokens = layer.attend_tokens(tokens, token_pe)
    attn = layer.cross_attn_token_to_image
    if context is None:
        keyed = image + image_pe  # keys of both cross-attentions (the image does not change between them)
        update = few_attend_to_many(attn, tokens + token_pe, keyed, image)
    else:
        update = attn.attend(attn._heads(attn.q_proj(tokens + token_pe)), *context.first_kv)
    tokens = layer.layer_norm2(tokens + update)
    tokens = layer.layer_norm3(tokens + layer.mlp(tokens))
    back = layer.cross_attn_image_to_token
    q = tokens + token_pe
    if context is None:
        image = many_attend_to_few(back, keyed, q, tokens, residual=image, in_place=True)
    else:
        image = queries_attend_to_few(back, context.first_q, q, tokens, residual=image, shared=context.shared)
    return tokens, layer.layer_norm4(image)


def image_context(transformer: TwoWayTransformer, image: torch.Tensor, image_pe: torch.Tensor,
                  high_res_tokens: tuple[torch.Tensor, torch.Tensor]) -> ImageContext:
    """The prompt-independent part of a decoder pass. image: (B, C, H, W) (image embedding plus
    the no-mask or mask embedding), image_pe: (1, C, H, W)."""
    b = image.shape[0]
    flat = image.flatten(2).transpose(1, 2).contiguous()  # read several times by every prompt
    pe = image_pe.flatten(2).transpose(1, 2).contiguous().expand(b, -1, -1)
    first = transformer.layers[0]
    t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
    kv = (t2i._heads(t2i.k_proj(flat + pe)), t2i._heads(t2i.v_proj(flat)))
    return ImageContext(flat, pe, kv, i2t.q_proj(flat + pe), high_res_tokens)


def two_way(transformer: TwoWayTransformer, tokens: torch.Tensor,
            context: ImageContext) -> tuple[torch.Tensor, torch.Tensor]:
    """``transformer(image, image_pe, tokens)`` from the image's context: tokens (B, N, C) ->
    tokens (B, N, C), image (B, HW, C)."""
    image, image_pe = context.image, context.image_pe
    token_pe = tokens
    for i, layer in enumerate(transformer.layers):
        tokens, image = _block(layer, tokens, image, token_pe, image_pe, context if i == 0 else None)
    update = few_attend_to_many(transformer.final_attn_token_to_image, tokens + token_pe, image + image_pe, image)
    return transformer.layer_norm_final_attn(tokens + update), image


def high_res_tokens(high_res: tuple[torch.Tensor, torch.Tensor],
                    biases: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The skip features in the token layout of ``FastMaskDecoder.upscale``, plus the transposed
    convolutions' biases (so that their products accumulate onto these):
    s0 (B, C/8, 4E, 4E) -> (B, E*E, 4, 4, C/8), s1 (B, C/4, 2E, 2E) -> (B, E*E, 4, C/4)."""
    s0, s1 = high_res
    b, c0, h0, w0 = s0.shape
    e_h, e_w = h0 // 4, w0 // 4
    # rows 4i + 2di1 + di2, columns 4j + 2dj1 + dj2
    t0 = s0.view(b, c0, e_h, 2, 2, e_w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1).reshape(b, e_h * e_w, 4, 4, c0)
    c1 = s1.shape[1]
    t1 = s1.view(b, c1, e_h, 2, e_w, 2).permute(0, 2, 4, 3, 5, 1).reshape(b, e_h * e_w, 4, c1)  # rows 2i + di
    return t0 + biases[0], t1 + biases[1]


def _accumulate(base: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``base + x @ w`` for x (B, R, I), w (I, O), base (B|1, R, O) (possibly a batch-broadcast
    view): one matrix product over all B*R rows, the base added in the same pass when B = 1."""
    b, r, i = x.shape
    if b == 1:
        return torch.addmm(base.reshape(r, -1), x.reshape(r, i), w).view(1, r, -1)
    return torch.mm(x.reshape(b * r, i), w).view(b, r, w.shape[1]).add_(base)


class FastMaskDecoder:
    """``MaskDecoder`` for inference, over an ``ImageContext``. Holds the plain decoder (its
    modules are used as they are) and its transposed convolutions' weights as (C_in, 4*C_out)
    matrices (columns ordered di, dj, c_out), read once when built."""

    def __init__(self, plain: MaskDecoder) -> None:
        self.plain = plain
        with torch.no_grad():
            c1, c2 = plain.upscale_conv1.weight, plain.upscale_conv2.weight
            self.w1 = c1.permute(0, 2, 3, 1).reshape(c1.shape[0], -1).clone()
            self.w2 = c2.permute(0, 2, 3, 1).reshape(c2.shape[0], -1).clone()

    def skip_tokens(self, high_res: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``high_res_tokens`` with the upscaling convolutions' biases: once per image."""
        p = self.plain
        return high_res_tokens(high_res, (p.upscale_conv2.bias, p.upscale_conv1.bias))

    def context(self, image: torch.Tensor, image_pe: torch.Tensor,
                high_res: tuple[torch.Tensor, torch.Tensor]) -> ImageContext:
        """``ImageContext`` of image (B, C, E, E) (embedding + dense prompt embedding)."""
        return image_context(self.plain.transformer, image, image_pe, self.skip_tokens(high_res))

    def upscale(self, src: torch.Tensor, s0_t: torch.Tensor, s1_t: torch.Tensor, hyper: torch.Tensor,
                h: int, w: int) -> torch.Tensor:
        """Masks (B, K, 4h, 4w) from image tokens src (B, HW, C), skip tokens s1_t (B|1, HW, 4, C/4),
        s0_t (B|1, HW, 4, 4, C/8) and hypernetwork outputs hyper (B, K, C/8): the transposed
        convolutions as per-token products, only the K masks put back in image order."""
        b, hw, _ = src.shape
        y = _accumulate(s1_t.reshape(s1_t.shape[0], hw, -1), src, self.w1).view(b, hw, 4, -1)
        ln = self.plain.upscale_layer_norm
        y = F.gelu(F.layer_norm(y, (y.shape[-1],), ln.weight, ln.bias, ln.eps))
        z = _accumulate(s0_t.reshape(s0_t.shape[0], hw * 4, -1), y.view(b, hw * 4, -1), self.w2)
        z = F.gelu(z).view(b, hw * 16, -1)  # (B, HW*16, C/8): token, first 2x2 offset, second 2x2 offset
        k = hyper.shape[1]
        m = torch.bmm(z, hyper.transpose(1, 2))  # (B, HW*16, K)
        # (i, j, di1, dj1, di2, dj2) -> row 4i + 2di1 + di2, column 4j + 2dj1 + dj2
        return m.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(b, k, 4 * h, 4 * w)

    def __call__(self, sparse: torch.Tensor, context: ImageContext, side: tuple[int, int], multimask: bool,
                 min_iou: float | None = None, best_only: bool = False,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``MaskDecoder.forward`` for prompt tokens sparse (B, N, C) over ``context`` (B rows);
        side: (E, E). min_iou (multimask only): masks only for the prompts with a predicted IoU
        above it; the last output then lists those prompts' rows (else None). best_only
        (multimask only): the candidate with the highest predicted IoU alone (K = 1)."""
        p = self.plain
        b = sparse.shape[0]
        tokens = torch.cat([p.output_tokens(b), sparse.to(context.image.dtype)], dim=1)
        tokens, src = two_way(p.transformer, tokens, context)
        mask_tokens = tokens[:, 2:2 + p.num_mask_tokens]
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(p.output_hypernetworks_mlps)], 1)
        s0_t, s1_t = context.high_res_tokens
        iou = p.iou_prediction_head(tokens[:, 1])
        obj_score = p.pred_obj_score_head(tokens[:, 0])
        # the candidates returned: tokens 1..3 (multimask; or the best of them), token 0 (single),
        # or all four when single-mask output picks by stability
        stable_pick = not multimask and p.cfg.dynamic_multimask_via_stability
        if multimask and best_only:
            pick = iou[:, 1:].argmax(-1, keepdim=True) + 1  # (B, 1)
            take = lambda t: t.gather(1, pick.view(b, 1, *[1] * (t.dim() - 2)).expand(b, 1, *t.shape[2:]))  # noqa: E731
            iou_out, tokens_out, hyper = take(iou), take(mask_tokens), take(hyper)
        elif multimask:
            iou_out, tokens_out, hyper = iou[:, 1:], mask_tokens[:, 1:], hyper[:, 1:]
        elif not stable_pick:
            iou_out, tokens_out, hyper = iou[:, :1], mask_tokens[:, :1], hyper[:, :1]
        rows = None
        if multimask and min_iou is not None:
            rows = (iou[:, 1:].amax(-1) > min_iou).nonzero().squeeze(1)
            src, hyper = src[rows], hyper[rows]
            if not context.shared and s0_t.shape[0] > 1:
                s0_t, s1_t = s0_t[rows], s1_t[rows]
            elif len(rows) != b:
                s0_t, s1_t = s0_t[:1].expand(len(rows), *s0_t.shape[1:]), s1_t[:1].expand(len(rows), *s1_t.shape[1:])
        h, w = side
        if src.shape[0]:
            masks = self.upscale(src, s0_t, s1_t, hyper, h, w)
        else:  # no prompt passed min_iou
            masks = src.new_zeros(0, hyper.shape[1], 4 * h, 4 * w)
        if not stable_pick:
            return masks, iou_out, tokens_out, obj_score, rows
        masks, iou = pick_stable(masks, iou, p.cfg.dynamic_multimask_stability_delta,
                                 p.cfg.dynamic_multimask_stability_thresh)
        return masks, iou, mask_tokens[:, :1], obj_score, None
