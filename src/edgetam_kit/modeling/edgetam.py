"""EdgeTAM composed from its modules: the image path (encoder -> prompt encoder, mask decoder)
and the steps of tracking (memory attention, decoding on a conditioned frame, memory encoding).

Tensor conventions: pixels (B, 3, S, S) normalised, S = ``config.image_size``; prompt coordinates
(x, y) in pixels of that S x S frame; E = S // 16. This is the plain network: no fast paths, no
caches, no precision handling. The runtime layer (``edgetam_kit.runtime``) runs it fast and is
parity-tested against it; the tracking steps take the runtime's decoder and memory attention as
arguments (``decode=``, ``attend=``) so that their composition is written once, here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import torch.nn.functional as F

from ..config import EdgeTamConfig
from .image_encoder import ImageEncoder
from .layers import FeedForward, RandomFourierEmbedding
from .mask_decoder import MaskDecoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .perceiver import SpatialPerceiver
from .position_encoding import sine_encoding
from .prompt_encoder import PromptEncoder

NO_OBJECT_LOGIT = -1024.0  # mask logits written where the object-score head says "absent"


@dataclass
class ImageFeatures:
    """Encoder output for B images.

    embed: (B, C, E, E) lowest-resolution features, no-memory embedding added.
    high_res: ((B, C/8, 4E, 4E), (B, C/4, 2E, 2E)) projected finer FPN levels.
    """

    embed: torch.Tensor
    high_res: tuple[torch.Tensor, torch.Tensor]

    def __len__(self) -> int:
        return self.embed.shape[0]

    def select(self, index: torch.Tensor) -> "ImageFeatures":
        """Features of images ``index`` (a 1-D long tensor), repeated as needed."""
        return ImageFeatures(self.embed.index_select(0, index), tuple(h.index_select(0, index) for h in self.high_res))

    def to(self, dtype: torch.dtype) -> "ImageFeatures":
        """The same features in ``dtype`` (self when they already are)."""
        if self.embed.dtype == dtype and all(h.dtype == dtype for h in self.high_res):
            return self
        return ImageFeatures(self.embed.to(dtype), (self.high_res[0].to(dtype), self.high_res[1].to(dtype)))


@dataclass
class DecoderOutput:
    """Per prompted object (N of them): K = 3 masks if multimask else 1.

    low_res_logits: (N, K, 4E, 4E); iou: (N, K) predicted IoU; object_score: (N,) logits
    (> 0 means an object is present); mask_tokens: (N, K, C).
    rows: None, or (decoded with ``min_iou``) the indices (R,) of the prompts that have masks;
    then low_res_logits is (R, K, 4E, 4E), row j belonging to prompt rows[j].
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor
    mask_tokens: torch.Tensor
    rows: torch.Tensor | None = None


Decode = Callable[..., DecoderOutput]  # ``EdgeTam.decode``'s signature, or a runtime's faster equal


@dataclass
class TrackOutput:
    """One tracking step for B objects on one frame.

    low_res_logits: (B, 1, 4E, 4E) the chosen mask (absent objects at NO_OBJECT_LOGIT);
    high_res_logits: (B, 1, S, S) the same upsampled to the model frame; iou: (B,);
    object_score: (B,) logits; pointer: (B, C) object pointer for later frames.
    """

    low_res_logits: torch.Tensor
    high_res_logits: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor
    pointer: torch.Tensor


class EdgeTam(nn.Module):
    def __init__(self, config: EdgeTamConfig, video: bool = False) -> None:
        super().__init__()
        self.config = config
        dim = config.mask_decoder.dim
        if config.prompt_encoder.embed_dim != dim or config.image_encoder.d_model != dim:
            raise ValueError("image_encoder.d_model, prompt_encoder.embed_dim and mask_decoder.dim must be equal")
        self.vision_encoder = ImageEncoder(config.image_encoder)
        self.prompt_encoder = PromptEncoder(dim, config.image_size, config.prompt_encoder.mask_in_chans)
        self.mask_decoder = MaskDecoder(config.mask_decoder)
        self.shared_image_embedding = RandomFourierEmbedding(dim // 2)
        self.no_memory_embedding = nn.Parameter(torch.zeros(1, 1, dim))
        self.has_video = False
        if video:
            self.add_video_modules()

    def add_video_modules(self, occlusion_embedding: bool = False) -> None:
        """Create the modules the tracker needs (memory encoder, perceiver, memory attention,
        object pointers). Image-only checkpoints do not carry them."""
        cfg, mem = self.config, self.config.memory
        dim = cfg.mask_decoder.dim
        self.memory_encoder = MemoryEncoder(dim, mem.mem_dim, mem.fuser_depth)
        self.spatial_perceiver = SpatialPerceiver(
            mem.mem_dim, mem.perceiver_depth, mem.mem_dim, 1, mem.perceiver_mlp_mult,
            mem.perceiver_num_latents, mem.perceiver_num_latents_2d,
        )
        self.memory_attention = MemoryAttention(
            dim, mem.mem_dim, mem.attention_depth, mem.attention_mlp_dim, 1, mem.rope_theta,
            key_side=self.spatial_perceiver.grid,
        )
        self.object_pointer_proj = FeedForward(dim, dim, dim, depth=3)
        self.no_object_pointer = nn.Parameter(torch.zeros(1, dim))
        self.no_memory_positional_encoding = nn.Parameter(torch.zeros(1, 1, dim))
        self.memory_temporal_positional_encoding = nn.Parameter(torch.zeros(mem.num_maskmem, 1, 1, mem.mem_dim))
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.occlusion_spatial_embedding_parameter = (
            nn.Parameter(torch.zeros(1, mem.mem_dim)) if occlusion_embedding else None
        )
        self.has_video = True

    @property
    def device(self) -> torch.device:
        return self.no_memory_embedding.device

    @property
    def dtype(self) -> torch.dtype:
        return self.no_memory_embedding.dtype

    def encode_image(self, pixels: torch.Tensor, add_no_memory: bool = True) -> ImageFeatures:
        """pixels: (B, 3, S, S) normalised. One trunk + neck pass.

        add_no_memory: add the no-memory embedding (single images and initial prompted
        frames); the tracker asks for the raw features instead.
        """
        feats = self.vision_encoder(pixels)
        embed = feats[-1]
        if add_no_memory:
            embed = embed + self.no_memory_embedding.reshape(1, -1, 1, 1)
        return ImageFeatures(embed, (self.mask_decoder.conv_s0(feats[0]), self.mask_decoder.conv_s1(feats[1])))

    def dense_pe(self) -> torch.Tensor:
        """(1, C, E, E) positional encoding of the embedding grid."""
        return self.shared_image_embedding.grid(self.config.embedding_size).unsqueeze(0)

    def sparse_prompt(self, coords: torch.Tensor | None, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """Prompt tokens (N, P + 1, C) of coords (N, P, 2) model-frame pixels and labels (N, P),
        with the padding point the network was trained with appended; (N, 0, C) without points."""
        if coords is None:
            return self.no_memory_embedding.new_zeros(n, 0, self.config.mask_decoder.dim)
        pad_xy = coords.new_zeros(n, 1, 2)
        pad_label = labels.new_full((n, 1), -1)
        return self.prompt_encoder.embed_points(torch.cat([coords, pad_xy], 1), torch.cat([labels, pad_label], 1))

    def decode(
        self,
        features: ImageFeatures,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_logits: torch.Tensor | None = None,
        multimask: bool = True,
        best_only: bool = False,
    ) -> DecoderOutput:
        """Decode N objects against ``features`` (N images, or 1 image shared by all).

        coords: (N, P, 2) input-frame pixels (box corners first, labels 2 and 3), labels:
        (N, P); both may be None for a mask-only prompt. mask_logits: (N, 1, 4E, 4E).
        best_only (with ``multimask``): only the candidate with the highest predicted IoU, K = 1.
        """
        if coords is None and mask_logits is None:
            raise ValueError("decode needs points, a box or a mask")
        n = coords.shape[0] if coords is not None else mask_logits.shape[0]
        sparse = self.sparse_prompt(coords, labels, n)
        dense = self.prompt_encoder.embed_mask(mask_logits, n)
        if len(features) == 1 and n > 1:
            features = features.select(torch.zeros(n, dtype=torch.long, device=features.embed.device))
        masks, iou, tokens, obj = self.mask_decoder(features.embed, self.dense_pe(), features.high_res, sparse, dense,
                                                    multimask)
        if multimask and best_only:
            pick = iou.argmax(-1)
            rows = torch.arange(n, device=iou.device)
            masks, iou, tokens = masks[rows, pick][:, None], iou[rows, pick][:, None], tokens[rows, pick][:, None]
        return DecoderOutput(masks, iou, obj.squeeze(-1), tokens)

    # ------------------------------------------------------------------ video steps
    def _require_video(self) -> None:
        if not self.has_video:
            raise ValueError(
                "model: this checkpoint has no video-model tensors (memory encoder, perceiver, memory "
                "attention); load an EdgeTamVideoModel folder or the original edgetam.pt to track"
            )

    def frame_pos(self) -> torch.Tensor:
        """(1, C, E, E) sine encoding of the lowest-resolution feature grid."""
        e = self.config.embedding_size
        return sine_encoding(e, e, self.config.mask_decoder.dim, device=self.device).to(self.dtype)

    def condition(self, raw: torch.Tensor, memory: torch.Tensor | None, memory_pos: torch.Tensor | None,
                  num_frames: int, num_pointer_tokens: int, attend: Callable[..., torch.Tensor] | None = None,
                  ) -> torch.Tensor:
        """Frame features conditioned on the memory bank; with no memory (an initial prompted
        frame) the no-memory embedding is added instead. raw: (B, C, E, E). attend: a callable
        equal to ``self.memory_attention`` (a runtime's), called as it is."""
        if memory is None:
            return raw + self.no_memory_embedding.reshape(1, -1, 1, 1)
        self._require_video()
        pos = self.frame_pos().expand(raw.shape[0], -1, -1, -1)
        return (attend or self.memory_attention)(raw, pos, memory, memory_pos, num_frames, num_pointer_tokens)

    def track_decode(
        self,
        conditioned: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_logits: torch.Tensor | None,
        multimask: bool,
        decode: Decode | None = None,
    ) -> TrackOutput:
        """Decode B objects on one frame as the tracker does: a padding point when there is
        no prompt, absent objects blanked, the best of the multimask outputs kept, and the
        object pointer computed from the chosen mask token. decode: ``self.decode`` or a
        runtime's equal (same arguments)."""
        self._require_video()
        b = conditioned.shape[0]
        if coords is None:  # no prompt: one "not a point" token (decode appends the usual padding one)
            coords = conditioned.new_zeros(b, 1, 2)
            labels = torch.full((b, 1), -1, dtype=torch.long, device=conditioned.device)
        out = (decode or self.decode)(ImageFeatures(conditioned, high_res), coords, labels, mask_logits, multimask,
                                      best_only=multimask)  # K = 1: the best candidate, or the single mask
        present = out.object_score > 0
        low = torch.where(present[:, None, None, None], out.low_res_logits,
                          torch.full_like(out.low_res_logits, NO_OBJECT_LOGIT)).float()
        size = self.config.image_size
        high = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        pointer = self.object_pointer_proj(out.mask_tokens[:, 0])
        lam = present.to(pointer.dtype)[:, None]
        pointer = lam * pointer + (1 - lam) * self.no_object_pointer
        return TrackOutput(low, high, out.iou[:, 0], out.object_score, pointer)

    def mask_as_output(self, raw: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
                       mask: torch.Tensor, decode: Decode | None = None) -> TrackOutput:
        """A mask prompt used as the frame's output directly (no decoding of the mask itself);
        the decoder only supplies the object pointer. mask: (B, 1, S, S) float 0/1."""
        self._require_video()
        high = mask * 20.0 - 10.0
        s = high.shape[-1] // 4
        low = F.interpolate(high, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        small = self.mask_downsample(mask)
        pointer_src = self.track_decode(raw, high_res, None, None, small, multimask=False, decode=decode)
        present = (mask.flatten(1) > 0).any(1)
        lam = present.to(high.dtype)[:, None]
        pointer = lam * pointer_src.pointer + (1 - lam) * self.no_object_pointer
        score = 20.0 * present.to(high.dtype) - 10.0
        return TrackOutput(low, high, torch.ones_like(score), score, pointer)

    def encode_memory(self, raw: torch.Tensor, high_res_logits: torch.Tensor, binarize: bool,
                      object_score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory tokens of B objects on one frame: (B, 512, 64) and their pos (B, 512, 64)."""
        self._require_video()
        mem = self.config.memory
        mask = (high_res_logits > 0).to(raw.dtype) if binarize else torch.sigmoid(high_res_logits).to(raw.dtype)
        mask = mask * mem.sigmoid_scale + mem.sigmoid_bias
        features, pos = self.memory_encoder(raw, mask)
        if self.occlusion_spatial_embedding_parameter is not None:
            absent = (object_score <= 0).to(features.dtype)[:, None, None, None]
            features = features + absent * self.occlusion_spatial_embedding_parameter.reshape(1, -1, 1, 1)
        return self.spatial_perceiver(features, pos)
