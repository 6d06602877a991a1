"""Parameter names of the two published EdgeTAM layouts and how they map.

Our modules use the Hugging Face names (``EdgeTamModel.save_pretrained``), so an HF
folder loads as is; the original ``edgetam.pt`` (``{"model": state_dict}``) is renamed
by the rules below. These are facts about the file formats, nothing more.
"""

from __future__ import annotations

import re

import torch

# Regex rules, applied in order, first match wins; groups are re-used in the target.
_ORIGINAL_TO_HF_RULES: list[tuple[str, str]] = [
    (r"^image_encoder\.trunk\.body\.(.*)$", r"vision_encoder.backbone.timm_model.\1"),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.(weight|bias)$", r"vision_encoder.neck.convs.\1.\2"),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^sam_prompt_encoder\.not_a_point_embed\.weight$", "prompt_encoder.not_a_point_embed.weight"),
    (r"^sam_prompt_encoder\.no_mask_embed\.weight$", "prompt_encoder.no_mask_embed.weight"),
    (r"^sam_prompt_encoder\.mask_downscaling\.0\.(.*)$", r"prompt_encoder.mask_embed.conv1.\1"),
    (r"^sam_prompt_encoder\.mask_downscaling\.1\.(.*)$", r"prompt_encoder.mask_embed.layer_norm1.\1"),
    (r"^sam_prompt_encoder\.mask_downscaling\.3\.(.*)$", r"prompt_encoder.mask_embed.conv2.\1"),
    (r"^sam_prompt_encoder\.mask_downscaling\.4\.(.*)$", r"prompt_encoder.mask_embed.layer_norm2.\1"),
    (r"^sam_prompt_encoder\.mask_downscaling\.6\.(.*)$", r"prompt_encoder.mask_embed.conv3.\1"),
    # mask decoder: 3-layer MLPs are (proj_in, layers.0, proj_out) in the HF layout
    (r"^sam_mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.0\.(.*)$",
     r"mask_decoder.\1.proj_in.\2"),
    (r"^sam_mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.1\.(.*)$",
     r"mask_decoder.\1.layers.0.\2"),
    (r"^sam_mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.2\.(.*)$",
     r"mask_decoder.\1.proj_out.\2"),
    (r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.layers\.0\.(.*)$", r"mask_decoder.transformer.layers.\1.mlp.proj_in.\2"),
    (r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.layers\.1\.(.*)$", r"mask_decoder.transformer.layers.\1.mlp.proj_out.\2"),
    (r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.(.*)$", r"mask_decoder.transformer.layers.\1.layer_norm\2.\3"),
    (r"^sam_mask_decoder\.transformer\.norm_final_attn\.(.*)$", r"mask_decoder.transformer.layer_norm_final_attn.\1"),
    (r"^sam_mask_decoder\.(transformer\..*)\.out_proj\.(.*)$", r"mask_decoder.\1.o_proj.\2"),
    (r"^sam_mask_decoder\.(transformer\..*\.[qkv]_proj\..*)$", r"mask_decoder.\1"),
    (r"^sam_mask_decoder\.output_upscaling\.0\.(.*)$", r"mask_decoder.upscale_conv1.\1"),
    (r"^sam_mask_decoder\.output_upscaling\.1\.(.*)$", r"mask_decoder.upscale_layer_norm.\1"),
    (r"^sam_mask_decoder\.output_upscaling\.3\.(.*)$", r"mask_decoder.upscale_conv2.\1"),
    (r"^sam_mask_decoder\.(iou_token|mask_tokens|obj_score_token|conv_s0|conv_s1)\.(.*)$", r"mask_decoder.\1.\2"),
]
_COMPILED = [(re.compile(p), r) for p, r in _ORIGINAL_TO_HF_RULES]

# Prefixes of tensors that only the video model uses, in each layout.
VIDEO_PREFIXES = {
    "original": (
        "memory_attention.", "memory_encoder.", "spatial_perceiver.", "obj_ptr_proj.", "obj_ptr_tpos_proj.",
        "mask_downsample.", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial",
    ),
    "hf": (
        "memory_attention.", "memory_encoder.", "spatial_perceiver.", "object_pointer_proj.",
        "temporal_positional_encoding_projection_layer.", "mask_downsample.", "memory_temporal_positional_encoding",
        "no_memory_positional_encoding", "no_object_pointer", "occlusion_spatial_embedding_parameter",
    ),
}

_PE_ORIGINAL = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_POINT_EMBED_ORIGINAL = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d)\.weight$")


def is_video_key(key: str, layout: str) -> bool:
    return key.startswith(VIDEO_PREFIXES[layout])


def original_to_hf(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """Rename an original EdgeTAM state dict to the HF image-model layout.

    Returns (image tensors in HF names, video tensors in original names, unrecognised keys).
    """
    out: dict[str, torch.Tensor] = {}
    video: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    point_embeds: dict[int, torch.Tensor] = {}
    for key, value in sd.items():
        if is_video_key(key, "original"):
            video[key] = value
            continue
        if key == _PE_ORIGINAL:
            out["shared_image_embedding.positional_embedding"] = value
            out["prompt_encoder.shared_embedding.positional_embedding"] = value
            continue
        m = _POINT_EMBED_ORIGINAL.match(key)
        if m:
            point_embeds[int(m.group(1))] = value
            continue
        for pattern, repl in _COMPILED:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if point_embeds:
        if sorted(point_embeds) != list(range(len(point_embeds))):
            unknown.extend(f"sam_prompt_encoder.point_embeddings.{i}.weight (missing)" for i in range(4) if i not in point_embeds)
        else:
            out["prompt_encoder.point_embed.weight"] = torch.cat([point_embeds[i] for i in sorted(point_embeds)], 0)
    return out, video, unknown
