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
# Video-model tensors (memory encoder, perceiver, memory attention, pointers).
_ORIGINAL_TO_HF_VIDEO_RULES: list[tuple[str, str]] = [
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^obj_ptr_proj\.layers\.0\.(.*)$", r"object_pointer_proj.proj_in.\1"),
    (r"^obj_ptr_proj\.layers\.1\.(.*)$", r"object_pointer_proj.layers.0.\1"),
    (r"^obj_ptr_proj\.layers\.2\.(.*)$", r"object_pointer_proj.proj_out.\1"),
    (r"^mask_downsample\.(.*)$", r"mask_downsample.\1"),
    (r"^memory_attention\.layers\.(\d+)\.(self_attn|cross_attn_image)\.out_proj\.(.*)$",
     r"memory_attention.layers.\1.\2.o_proj.\3"),
    (r"^memory_attention\.layers\.(\d+)\.(self_attn|cross_attn_image)\.([qkv]_proj)\.(.*)$",
     r"memory_attention.layers.\1.\2.\3.\4"),
    (r"^memory_attention\.layers\.(\d+)\.linear1\.(.*)$", r"memory_attention.layers.\1.mlp.up_proj.\2"),
    (r"^memory_attention\.layers\.(\d+)\.linear2\.(.*)$", r"memory_attention.layers.\1.mlp.down_proj.\2"),
    (r"^memory_attention\.layers\.(\d+)\.norm(\d)\.(.*)$", r"memory_attention.layers.\1.layer_norm\2.\3"),
    (r"^memory_attention\.norm\.(.*)$", r"memory_attention.layer_norm.\1"),
    (r"^memory_encoder\.pix_feat_proj\.(.*)$", r"memory_encoder.feature_projection.\1"),
    (r"^memory_encoder\.out_proj\.(.*)$", r"memory_encoder.projection.\1"),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.dwconv\.(.*)$", r"memory_encoder.memory_fuser.layers.\1.depthwise_conv.\2"),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.norm\.(.*)$", r"memory_encoder.memory_fuser.layers.\1.layer_norm.\2"),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.pwconv1\.(.*)$", r"memory_encoder.memory_fuser.layers.\1.pointwise_conv1.\2"),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.pwconv2\.(.*)$", r"memory_encoder.memory_fuser.layers.\1.pointwise_conv2.\2"),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.gamma$", r"memory_encoder.memory_fuser.layers.\1.scale"),
    (r"^spatial_perceiver\.latents$", "spatial_perceiver.latents_1d"),
    (r"^spatial_perceiver\.latents_2d$", "spatial_perceiver.latents_2d"),
    (r"^spatial_perceiver\.norm\.(.*)$", r"spatial_perceiver.layer_norm.\1"),
    (r"^spatial_perceiver\.layers\.(\d+)\.attn\.norm_latents\.(.*)$", r"spatial_perceiver.layers.\1.layer_norm_latents.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.attn\.norm_x\.(.*)$", r"spatial_perceiver.layers.\1.layer_norm_input.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.attn\.to_q\.(.*)$", r"spatial_perceiver.layers.\1.cross_attention.q_proj.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.attn\.to_out\.(.*)$", r"spatial_perceiver.layers.\1.cross_attention.o_proj.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.self_attn\.norm\.(.*)$", r"spatial_perceiver.layers.\1.layer_norm_self.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.self_attn\.to_q\.(.*)$", r"spatial_perceiver.layers.\1.self_attention.q_proj.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.self_attn\.to_out\.(.*)$", r"spatial_perceiver.layers.\1.self_attention.o_proj.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.ff\.0\.(.*)$", r"spatial_perceiver.layers.\1.mlp.layer_norm.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.ff\.1\.(.*)$", r"spatial_perceiver.layers.\1.mlp.up_proj.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.ff\.3\.(.*)$", r"spatial_perceiver.layers.\1.mlp.down_proj.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.self_ff\.0\.(.*)$", r"spatial_perceiver.layers.\1.self_mlp.layer_norm.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.self_ff\.1\.(.*)$", r"spatial_perceiver.layers.\1.self_mlp.up_proj.\2"),
    (r"^spatial_perceiver\.layers\.(\d+)\.self_ff\.3\.(.*)$", r"spatial_perceiver.layers.\1.self_mlp.down_proj.\2"),
]
# Fused key/value projections of the original perceiver, split in two halves in the HF layout.
_KV_SPLIT = re.compile(r"^spatial_perceiver\.layers\.(\d+)\.(attn|self_attn)\.to_kv\.weight$")
_MASK_DOWNSAMPLER = re.compile(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(weight|bias)$")

_COMPILED = [(re.compile(p), r) for p, r in _ORIGINAL_TO_HF_RULES]
_COMPILED_VIDEO = [(re.compile(p), r) for p, r in _ORIGINAL_TO_HF_VIDEO_RULES]


def original_video_to_hf(video: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename the original video-model tensors to the HF layout. Returns (tensors, unrecognised keys)."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in video.items():
        m = _KV_SPLIT.match(key)
        if m:
            which = "cross_attention" if m.group(2) == "attn" else "self_attention"
            k, v = value.chunk(2, dim=0)
            out[f"spatial_perceiver.layers.{m.group(1)}.{which}.k_proj.weight"] = k.clone()
            out[f"spatial_perceiver.layers.{m.group(1)}.{which}.v_proj.weight"] = v.clone()
            continue
        m = _MASK_DOWNSAMPLER.match(key)
        if m:
            # Sequential of (conv, norm, act) x N then a final 1x1 conv
            i = int(m.group(1))
            stage, part = divmod(i, 3)
            if part == 0 and key.replace(f"encoder.{i}.", f"encoder.{i + 1}.") in video:
                out[f"memory_encoder.mask_downsampler.layers.{stage}.conv.{m.group(2)}"] = value
            elif part == 1:
                out[f"memory_encoder.mask_downsampler.layers.{stage}.layer_norm.{m.group(2)}"] = value
            else:
                out[f"memory_encoder.mask_downsampler.final_conv.{m.group(2)}"] = value
            continue
        for pattern, repl in _COMPILED_VIDEO:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    return out, unknown

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
