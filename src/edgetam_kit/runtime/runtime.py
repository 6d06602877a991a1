"""``Runtime``: the one seam through which the engine (predictor, tracker, automatic masks) runs
the network. A backend fills in the fast parts it has (an encoder, a decoder, a memory
attention); every step it leaves out runs the plain modules of ``modeling/``. The runtime also
owns precision: the autocast dtype around the network, and the mask decoder kept in the model's
dtype (its thresholded logits are what reduced precision loses most and cost the least).

Tensor conventions as in ``modeling/edgetam.py``: pixels (B, 3, S, S); features (B, C, E, E);
prompt coordinates (x, y) in pixels of the model's S x S frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..modeling.edgetam import DecoderOutput, EdgeTam, ImageFeatures, TrackOutput
from .fast_decoder import FastMaskDecoder, ImageContext
from .fast_memory_attention import FramePrefix
from .weights import WeightsStamp, weights_digest

PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class Runtime:
    """What a backend prepared for one model.

    encoder: ``(B, 3, S, S) pixels -> (embed, s0, s1)``: the raw image embedding (B, C, E, E) and
    the decoder's projected high-resolution maps (B, C/8, 4E, 4E), (B, C/4, 2E, 2E).
    decoder: a ``FastMaskDecoder`` (image contexts, shared images, ``min_iou``/``best_only``).
    memory_attention: a replacement for ``model.memory_attention`` (same arguments, plus an
    optional ``prefix=``); prefix: ``(current, current_pos) -> FramePrefix`` shared by the objects
    of a frame. autocast: None (the model's dtype) or the dtype of ``torch.autocast``.
    decode_fn: replaces ``EdgeTam.decode`` (same arguments and result) when there is no ``decoder``;
    memory_encoder: replaces ``EdgeTam.encode_memory`` (same arguments and result); both for
    runtimes that run whole exported graphs (the onnx backend).
    Fields left None run the plain modules. ``model`` and ``stamp`` are set by ``optimize``.
    """

    backend: str
    encoder: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    memory_attention: Callable[..., torch.Tensor] | None = None
    autocast: torch.dtype | None = None
    modules: list[nn.Module] = field(default_factory=list)  # owned copies
    notes: list[str] = field(default_factory=list)
    decoder: FastMaskDecoder | None = None
    prefix: Callable[[torch.Tensor, torch.Tensor], FramePrefix] | None = None
    decode_fn: Callable[..., DecoderOutput] | None = None
    memory_encoder: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    model: EdgeTam | None = field(default=None, repr=False)
    stamp: WeightsStamp | None = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)

    @property
    def precision(self) -> str:
        return PRECISION_NAMES[self.autocast]

    @property
    def weights_id(self) -> str:
        """Digest of the encoder weights this runtime was built from (the cache's model identity)."""
        if self._digest is None:
            self._digest = weights_digest(self._model)
        return self._digest

    @property
    def _model(self) -> EdgeTam:
        if self.model is None:
            raise ValueError("this Runtime is not attached to a model: prepare it with ek.optimize(model, ...)")
        return self.model

    def context(self, device: torch.device | None = None) -> contextlib.AbstractContextManager:
        """The autocast context for inference (a no-op in fp32)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=(device or self._model.device).type, dtype=self.autocast)

    def _model_precision(self) -> contextlib.AbstractContextManager:
        """Autocast off: the decoder runs in the model's dtype (measured on a tracked real-shape
        stack: mask IoU vs fp32 min 0.950 with a bf16 decoder, 0.991 with an fp32 one)."""
        kind = self._model.device.type
        return torch.autocast(kind, enabled=False) if torch.is_autocast_enabled(kind) else contextlib.nullcontext()

    # ------------------------------------------------------------------ image
    def encode_image(self, pixels: torch.Tensor, add_no_memory: bool = True) -> ImageFeatures:
        """``EdgeTam.encode_image``, features returned in the model's dtype."""
        m = self._model
        if self.encoder is None:
            feats = m.encode_image(pixels, add_no_memory)
        else:
            embed, s0, s1 = self.encoder(pixels)
            if add_no_memory:
                embed = embed + m.no_memory_embedding.reshape(1, -1, 1, 1)
            feats = ImageFeatures(embed, (s0, s1))
        return feats.to(m.dtype)

    def image_context(self, features: ImageFeatures) -> ImageContext | None:
        """The prompt-independent part of decoding ``features`` without a mask prompt, to pass to
        ``decode(context=...)`` for every click on these images; None without a fast decoder."""
        if self.decoder is None:
            return None
        m = self._model
        with self._model_precision():
            features = features.to(m.dtype)
            image = features.embed + m.prompt_encoder.embed_mask(None, len(features))
            return self.decoder.context(image, m.dense_pe(), features.high_res)

    def decode(self, features: ImageFeatures, coords: torch.Tensor | None, labels: torch.Tensor | None,
               mask_logits: torch.Tensor | None = None, multimask: bool = True, best_only: bool = False,
               context: ImageContext | None = None, min_iou: float | None = None) -> DecoderOutput:
        """``EdgeTam.decode`` for N objects on ``features`` (N images, or 1 shared by all).
        context: ``image_context(features)`` (one row per object, or one for all), reused across
        prompts without a mask. min_iou (with multimask): masks only for the prompts whose best
        predicted IoU passes it (``DecoderOutput.rows``)."""
        m = self._model
        with self._model_precision():
            cast = lambda t: None if t is None else t.to(m.dtype)  # noqa: E731
            coords, mask_logits = cast(coords), cast(mask_logits)
            if self.decoder is None:
                out = (self.decode_fn or m.decode)(features.to(m.dtype), coords, labels, mask_logits, multimask,
                                                   best_only)
                if min_iou is None or not multimask:
                    return out
                rows = (out.iou.amax(-1) > min_iou).nonzero().squeeze(1)
                return DecoderOutput(out.low_res_logits[rows], out.iou, out.object_score, out.mask_tokens, rows)
            if coords is None and mask_logits is None:
                raise ValueError("decode needs points, a box or a mask")
            n = coords.shape[0] if coords is not None else mask_logits.shape[0]
            sparse = m.sparse_prompt(coords, labels, n)
            if mask_logits is not None or context is None:
                features = features.to(m.dtype)
                if len(features) == 1 and n > 1:
                    features = features.select(torch.zeros(n, dtype=torch.long, device=features.embed.device))
                image = features.embed + m.prompt_encoder.embed_mask(mask_logits, n)
                context = self.decoder.context(image, m.dense_pe(), features.high_res)
            elif len(context) != n:
                if len(context) != 1:
                    raise ValueError(f"context has {len(context)} rows for {n} prompts")
                context = context.select(torch.zeros(n, dtype=torch.long, device=context.image.device))
            side = features.embed.shape[-2:]
            masks, iou, tokens, obj, rows = self.decoder(sparse, context, (side[0], side[1]), multimask, min_iou,
                                                         best_only)
            return DecoderOutput(masks, iou, obj.squeeze(-1), tokens, rows)

    # ------------------------------------------------------------------ tracking
    def condition_prefix(self, raw: torch.Tensor) -> FramePrefix | None:
        """The memory-independent start of ``condition`` for one frame (raw: (1, C, E, E)), shared
        by every object tracked on it; None when this runtime has no such split."""
        if self.prefix is None:
            return None
        return self.prefix(raw, self._model.frame_pos())

    def condition(self, raw: torch.Tensor, memory: torch.Tensor | None, memory_pos: torch.Tensor | None,
                  num_frames: int, num_pointer_tokens: int, prefix: FramePrefix | None = None) -> torch.Tensor:
        """``EdgeTam.condition``; prefix: ``condition_prefix(raw)`` (same result)."""
        attend = self.memory_attention
        if attend is not None and prefix is not None:
            base = attend
            attend = lambda *args: base(*args, prefix=prefix)  # noqa: E731
        return self._model.condition(raw, memory, memory_pos, num_frames, num_pointer_tokens, attend=attend)

    def track_decode(self, conditioned: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
                     coords: torch.Tensor | None, labels: torch.Tensor | None, mask_logits: torch.Tensor | None,
                     multimask: bool) -> TrackOutput:
        """``EdgeTam.track_decode`` with this runtime's decoder."""
        return self._model.track_decode(conditioned, high_res, coords, labels, mask_logits, multimask,
                                        decode=self.decode)

    def mask_as_output(self, raw: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
                       mask: torch.Tensor) -> TrackOutput:
        """``EdgeTam.mask_as_output`` with this runtime's decoder."""
        return self._model.mask_as_output(raw, high_res, mask, decode=self.decode)

    def encode_memory(self, raw: torch.Tensor, high_res_logits: torch.Tensor, binarize: bool,
                      object_score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``EdgeTam.encode_memory`` (the plain modules, or the runtime's ``memory_encoder``)."""
        if self.memory_encoder is not None:
            self._model._require_video()
            return self.memory_encoder(raw, high_res_logits, binarize, object_score)
        return self._model.encode_memory(raw, high_res_logits, binarize, object_score)

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """``torch.inference_mode`` plus this runtime's autocast."""
        with torch.inference_mode(), self.context():
            yield

    def describe(self) -> dict[str, Any]:
        """Backend, precision, device and notes, for ``repr``s and ``edgetam info``."""
        m = self._model
        return {"backend": self.backend, "precision": self.precision, "device": str(m.device),
                "dtype": str(m.dtype).removeprefix("torch."), "notes": list(self.notes)}
