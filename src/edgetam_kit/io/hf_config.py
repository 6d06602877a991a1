"""EdgeTAM's config in the Hugging Face ``config.json`` layout, both ways."""

from __future__ import annotations

from typing import Any

from ..config import EdgeTamConfig, ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be used (corrupt, wrong tensors, unknown format)."""


def config_from_hf(d: dict[str, Any]) -> EdgeTamConfig:
    """Our config from an HF ``config.json`` (model_type ``edgetam`` or ``edgetam_video``)."""
    if d.get("model_type") not in ("edgetam", "edgetam_video"):
        raise CheckpointError(f"config.json: model_type is {d.get('model_type')!r}, expected 'edgetam' or 'edgetam_video'")
    vision = d.get("vision_config") or {}
    backbone = vision.get("backbone_config") or {}
    arch = str(backbone.get("architecture") or backbone.get("archirecture") or "repvit_m1").split(".")[0]
    channels = tuple(reversed(vision.get("backbone_channel_list", [384, 192, 96, 48])))
    levels = int(vision.get("num_feature_levels", 3))
    prompt = d.get("prompt_encoder_config") or {}
    dec = d.get("mask_decoder_config") or {}
    image_size = int(prompt.get("image_size", d.get("image_size", 1024)))
    defaults = MaskDecoderConfig()
    return EdgeTamConfig(
        image_size=image_size,
        image_encoder=ImageEncoderConfig(
            trunk=arch,
            trunk_channels=channels,
            d_model=int(vision.get("fpn_hidden_size", 256)),
            fpn_top_down_levels=tuple(vision.get("fpn_top_down_levels", [2, 3])),
            scalp=len(channels) - levels,
        ),
        prompt_encoder=PromptEncoderConfig(
            embed_dim=int(prompt.get("hidden_size", 256)), mask_in_chans=int(prompt.get("mask_input_channels", 16))
        ),
        mask_decoder=MaskDecoderConfig(
            **{
                name: dec.get(hf_name, getattr(defaults, name))
                for name, hf_name in _DECODER_HF_NAMES.items()
            }
        ),
        name=str(d.get("_name_or_path") or "edgetam"),
    )


_DECODER_HF_NAMES = {
    "dim": "hidden_size",
    "depth": "num_hidden_layers",
    "mlp_dim": "mlp_dim",
    "num_heads": "num_attention_heads",
    "attention_downsample_rate": "attention_downsample_rate",
    "num_multimask_outputs": "num_multimask_outputs",
    "iou_head_depth": "iou_head_depth",
    "iou_head_hidden_dim": "iou_head_hidden_dim",
    "dynamic_multimask_via_stability": "dynamic_multimask_via_stability",
    "dynamic_multimask_stability_delta": "dynamic_multimask_stability_delta",
    "dynamic_multimask_stability_thresh": "dynamic_multimask_stability_thresh",
}


def config_to_hf(cfg: EdgeTamConfig) -> dict[str, Any]:
    """An HF ``config.json`` (model_type ``edgetam``) describing ``cfg``."""
    enc = cfg.image_encoder
    channels = list(reversed(enc.trunk_channels))
    levels = len(enc.trunk_channels) - enc.scalp
    sizes = [[cfg.image_size // s, cfg.image_size // s] for s in (4, 8, 16, 32)][:levels]
    return {
        "architectures": ["EdgeTamModel"],
        "model_type": "edgetam",
        "initializer_range": 0.02,
        "vision_config": {
            "model_type": "edgetam_vision_model",
            "backbone_config": {
                "model_type": "timm_wrapper",
                "architecture": enc.trunk,
                "do_pooling": True,
                "num_classes": 2,  # unused by a features_only trunk, but transformers requires it
                "label_names": ["LABEL_0", "LABEL_1"],
                "initializer_range": 0.02,
                "model_args": {"in_chans": 3, "features_only": True, "out_indices": list(range(len(channels)))},
            },
            "backbone_channel_list": channels,
            "backbone_feature_sizes": sizes,
            "fpn_hidden_size": enc.d_model,
            "fpn_kernel_size": 1,
            "fpn_stride": 1,
            "fpn_padding": 0,
            "fpn_top_down_levels": list(enc.fpn_top_down_levels),
            "num_feature_levels": levels,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-6,
        },
        "prompt_encoder_config": {
            "model_type": "edgetam_prompt_encoder",
            "hidden_size": cfg.prompt_encoder.embed_dim,
            "image_size": cfg.image_size,
            "patch_size": 16,
            "mask_input_channels": cfg.prompt_encoder.mask_in_chans,
            "num_point_embeddings": 4,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-6,
            "scale": 1,
        },
        "mask_decoder_config": {
            "model_type": "edgetam_mask_decoder",
            "hidden_act": "gelu",
            **{hf: getattr(cfg.mask_decoder, ours) for ours, hf in _DECODER_HF_NAMES.items()},
        },
    }


# ----------------------------------------------------------------------------- reading
