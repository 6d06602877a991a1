"""Reference implementations built at identical random weights, for tests and benchmarks.

Needs the ``test`` extra (``edgetam-dimos`` for the original code, ``transformers`` for
Hugging Face's EdgeTamModel). Nothing in the engine imports this module.

``make_reference_checkpoints(folder, preset)`` writes the same random weights in both real
formats — ``edgetam.pt`` (original layout, written from the original model) and an HF folder
(written by ``EdgeTamModel.save_pretrained``) — and returns the two live reference models.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..io.checkpoint_keys import original_to_hf, original_video_to_hf
from ..config import EdgeTamConfig, get_config
from .random_weights import randomize_


@dataclass
class References:
    original: Any  # sam2.modeling.sam2_base.SAM2Base (image model)
    hf: Any  # transformers.EdgeTamModel
    pt_path: Path  # original-layout checkpoint
    hf_folder: Path  # HF-layout folder
    config: EdgeTamConfig


def _patch_timm_pretrained() -> None:
    """The original TimmBackbone asks timm for pretrained=True (a download); force False."""
    import sam2.modeling.backbones.timm as tb

    if getattr(tb.create_model, "_edgetam_kit_patched", False):
        return
    original = tb.create_model

    def create_model(*args: Any, **kwargs: Any) -> Any:
        kwargs["pretrained"] = False
        return original(*args, **kwargs)

    create_model._edgetam_kit_patched = True  # type: ignore[attr-defined]
    tb.create_model = create_model


def build_original(config: EdgeTamConfig, video: bool = False) -> Any:
    """The original EdgeTAM model (random init) from its packaged ``edgetam.yaml``."""
    _patch_timm_pretrained()
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    e = config.embedding_size
    overrides = [] if config.image_size == 1024 else [
        f"++model.image_size={config.image_size}",
        # the cross-attention RoPE grid is fixed to 64x64 in edgetam.yaml; follow the input size
        f"++model.memory_attention.layer.cross_attention.q_sizes=[{e},{e}]",
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # it prints progress lines
        if video:
            return build_sam2_video_predictor("edgetam.yaml", None, device="cpu", hydra_overrides_extra=overrides)
        return build_sam2("edgetam.yaml", None, device="cpu", hydra_overrides_extra=overrides)


def build_hf(config: EdgeTamConfig) -> Any:
    """transformers' EdgeTamModel with the real RepViT backbone (random init)."""
    from transformers import EdgeTamConfig as HFConfig
    from transformers import EdgeTamModel, EdgeTamVisionConfig, TimmWrapperConfig

    s = config.image_size
    vision = EdgeTamVisionConfig(
        backbone_config=TimmWrapperConfig(
            architecture=config.image_encoder.trunk,
            model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]},
        ),
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
    )
    hf_cfg = HFConfig(vision_config=vision, prompt_encoder_config={"image_size": s})
    return EdgeTamModel(hf_cfg).eval()


def make_reference_checkpoints(folder: str | Path, preset: str | EdgeTamConfig = "tiny", seed: int = 0) -> References:
    """Random weights (seeded; BatchNorm statistics randomised; object-score bias +10 so
    masks are not suppressed) written in both formats, plus the two live references."""
    config = get_config(preset) if isinstance(preset, str) else preset
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    original = build_original(config).eval()
    randomize_(original, seed)
    with torch.no_grad():
        original.sam_mask_decoder.pred_obj_score_head.layers[2].bias.fill_(10.0)
    pt_path = folder / "edgetam.pt"
    torch.save({"model": original.state_dict()}, pt_path)

    hf = build_hf(config)
    image, _video, unknown = original_to_hf(original.state_dict())
    if unknown:
        raise RuntimeError(f"unmapped original keys: {unknown}")
    missing, unexpected = hf.load_state_dict(image, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"HF oracle does not take the converted weights: missing={missing} unexpected={unexpected}")
    hf_folder = folder / "hf"
    hf.save_pretrained(hf_folder)
    return References(original, hf, pt_path, hf_folder, config)


@dataclass
class VideoReferences:
    original: Any  # sam2.sam2_video_predictor.SAM2VideoPredictor
    hf: Any  # transformers.EdgeTamVideoModel
    pt_path: Path  # original layout, video model included
    hf_folder: Path  # EdgeTamVideoModel.save_pretrained
    config: EdgeTamConfig


def build_hf_video(config: EdgeTamConfig) -> Any:
    """transformers' EdgeTamVideoModel shaped like the original EdgeTAM (no occlusion embedding,
    no temporal encoding of object pointers — the original has neither)."""
    from transformers import EdgeTamVideoConfig, EdgeTamVideoModel, EdgeTamVisionConfig, TimmWrapperConfig

    s, e = config.image_size, config.embedding_size
    vision = EdgeTamVisionConfig(
        backbone_config=TimmWrapperConfig(
            architecture=config.image_encoder.trunk,
            model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]},
        ),
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
    )
    cfg = EdgeTamVideoConfig(
        vision_config=vision, prompt_encoder_config={"image_size": s}, image_size=s,
        enable_occlusion_spatial_embedding=False, enable_temporal_pos_encoding_for_object_pointers=False,
        memory_attention_rope_feat_sizes=[e, e],
    )
    return EdgeTamVideoModel(cfg).eval()


def make_video_references(folder: str | Path, preset: str | EdgeTamConfig = "tiny", seed: int = 0) -> VideoReferences:
    """Random video-model weights in both formats plus the two live video references."""
    config = get_config(preset) if isinstance(preset, str) else preset
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    original = build_original(config, video=True).eval()
    randomize_(original, seed)
    with torch.no_grad():
        original.sam_mask_decoder.pred_obj_score_head.layers[2].bias.fill_(10.0)
    pt_path = folder / "edgetam.pt"
    torch.save({"model": original.state_dict()}, pt_path)
    image, video, unknown = original_to_hf(original.state_dict())
    video_hf, unknown_video = original_video_to_hf(video)
    if unknown or unknown_video:
        raise RuntimeError(f"unmapped original keys: {unknown + unknown_video}")
    hf = build_hf_video(config)
    missing, unexpected = hf.load_state_dict({**image, **video_hf}, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"HF video oracle does not take the weights: missing={missing} unexpected={unexpected}")
    hf_folder = folder / "hf_video"
    hf.save_pretrained(hf_folder)
    return VideoReferences(original, hf, pt_path, hf_folder, config)
