"""The plugins that ship with edgetam-kit, registered exactly as third-party ones are."""

from __future__ import annotations

from functools import partial

from .hookspecs import CheckpointSpec, Exporter, FrameSourceOpener, hookimpl


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
        *(CheckpointSpec(name=f"random:{preset}", source=f"(random weights, {preset} preset)", config=preset,
                         build=partial(_random_model, preset), random_weights=True, description=what)
          for preset, what in (("edgetam", "the real EdgeTAM architecture with RANDOM weights (try the CLI "
                                           "without weights; outputs are not meaningful); random:edgetam?seed=N"),
                               ("tiny", "a tiny network with RANDOM weights (fast smoke tests); random:tiny?seed=N"))),
    ]


def _random_model(preset: str, seed: int = 0) -> object:
    from ..testing.random_weights import build_random_model  # torch loads when a model is built

    return build_random_model(preset, seed=seed)


@hookimpl
def edgetam_kit_frame_sources() -> list[FrameSourceOpener]:
    from ..io import sources, video_source  # numpy only at import; av / tifffile / skimage load when a file is opened

    low = sources.BUILTIN_PRIORITY  # any plugin at the default priority 0 is tried before these
    return [
        FrameSourceOpener("array", sources.is_array_like, sources.ArraySource, low),
        FrameSourceOpener("image-folder", sources.is_image_folder, sources.ImageFolderSource, low),
        FrameSourceOpener("tiff-stack", sources.is_tiff_path, sources.TiffStackSource, low),
        FrameSourceOpener("video", sources.is_video_path, video_source.VideoSource, low),
    ]


@hookimpl
def edgetam_kit_exporters() -> list[Exporter]:
    from ..io.export import write_coco, write_label_tiff, write_ome_zarr  # pycocotools/tifffile/zarr load on write

    return [
        Exporter("coco", write_coco, ".json", "COCO instances JSON, masks as RLE (one file for all images)",
                 combined=True),
        Exporter("tiff", write_label_tiff, ".tif", "uint32 label image per image (0 = background)"),
        Exporter("zarr", write_ome_zarr, ".zarr", "OME-Zarr (NGFF 0.4) per image: image pyramid + labels/masks"),
    ]


@hookimpl
def edgetam_kit_backends() -> list:
    from ..io.onnx_export import ONNX, ONNX_INT8  # onnx/onnxruntime load when a model is prepared
    from ..runtime.backends import COMPILED, EAGER

    return [EAGER, COMPILED, ONNX, ONNX_INT8]
