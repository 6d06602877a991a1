"""The plugins that ship with edgetam-kit, registered exactly as third-party ones are."""

from __future__ import annotations

from .hookspecs import CheckpointSpec, hookimpl


@hookimpl
def edgetam_kit_checkpoints() -> list[CheckpointSpec]:
    return [
        CheckpointSpec(
            name="edgetam",
            source="yonigozlan/EdgeTAM-hf",
            description="EdgeTAM in the Hugging Face layout (config.json + model.safetensors)",
        ),
        CheckpointSpec(
            name="edgetam-original",
            source="facebook/EdgeTAM",
            filename="edgetam.pt",
            description="EdgeTAM as released by Meta (edgetam.pt, original layout)",
        ),
    ]
