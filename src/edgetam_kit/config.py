"""Model configuration: small frozen dataclasses and a registry of named presets.

The presets mirror the published EdgeTAM checkpoint (``edgetam``) and a reduced
input size used by the test-suite (``tiny``: the same network at 256x256 input, so
every tensor keeps its real shape but activations are 16x smaller).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageEncoderConfig:
    """RepViT trunk (from timm) + FPN neck."""

    trunk: str = "repvit_m1"
    trunk_channels: tuple[int, ...] = (48, 96, 192, 384)  # stride 4, 8, 16, 32
    d_model: int = 256
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    scalp: int = 1  # number of coarsest levels dropped after the neck


@dataclass(frozen=True)
class PromptEncoderConfig:
    embed_dim: int = 256
    mask_in_chans: int = 16


@dataclass(frozen=True)
class MaskDecoderConfig:
    dim: int = 256
    depth: int = 2
    mlp_dim: int = 2048
    num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98


@dataclass(frozen=True)
class MemoryConfig:
    """The video path: memory encoder, spatial perceiver, memory attention, pointers."""

    num_maskmem: int = 7  # memory frames attended: 1 slot per conditioning frame + 6 previous frames
    mem_dim: int = 64
    attention_depth: int = 2
    attention_mlp_dim: int = 2048
    rope_theta: float = 10000.0
    perceiver_depth: int = 2
    perceiver_num_latents: int = 256
    perceiver_num_latents_2d: int = 256
    perceiver_mlp_mult: int = 4
    fuser_depth: int = 2
    max_object_pointers: int = 16
    sigmoid_scale: float = 20.0
    sigmoid_bias: float = -10.0


@dataclass(frozen=True)
class EdgeTamConfig:
    """Everything needed to build the network.

    ``image_size`` is the square side (pixels) every image is resized to; the
    lowest-resolution feature map is ``image_size // 16`` on a side and the
    low-resolution mask logits are ``image_size // 4``.
    """

    image_size: int = 1024
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    prompt_encoder: PromptEncoderConfig = field(default_factory=PromptEncoderConfig)
    mask_decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    name: str = "edgetam"

    def __post_init__(self) -> None:
        if self.image_size <= 0 or self.image_size % 16:
            raise ValueError(f"image_size must be a positive multiple of 16, got {self.image_size}")

    @property
    def embedding_size(self) -> int:
        """Side of the lowest-resolution feature map (stride 16)."""
        return self.image_size // 16

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (stride 4)."""
        return self.image_size // 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EdgeTamConfig":
        def sub(kind: type, value: Any) -> Any:
            if value is None:
                return kind()
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = set(value) - known
            if unknown:
                raise ValueError(f"unknown {kind.__name__} keys: {sorted(unknown)}")
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})

        return cls(
            image_size=int(d.get("image_size", 1024)),
            image_encoder=sub(ImageEncoderConfig, d.get("image_encoder")),
            prompt_encoder=sub(PromptEncoderConfig, d.get("prompt_encoder")),
            mask_decoder=sub(MaskDecoderConfig, d.get("mask_decoder")),
            memory=sub(MemoryConfig, d.get("memory")),
            name=str(d.get("name", "custom")),
        )


PRESETS: dict[str, EdgeTamConfig] = {
    "edgetam": EdgeTamConfig(),
    "tiny": EdgeTamConfig(image_size=256, name="tiny"),
}


def get_config(name: str) -> EdgeTamConfig:
    """Return a preset by name (``edgetam`` or ``tiny``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"config: unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
