"""The ``manifest.json`` of an exported ONNX folder: what ``export_onnx`` wrote and what the ``onnx``
backend reads back (no onnx or onnxruntime needed here).

    {"format": "edgetam-kit-onnx", "format_version": 1, "edgetam_kit_version": ..., "opset": 18,
     "exporter": "dynamo", "video": true, "weights_id": ..., "image_size": 1024,
     "normalisation": {"mean": [...], "std": [...], "scale": 255.0}, "config": {...},
     "files": {"image_encoder": {"path": "image_encoder.onnx", "sha256": ..., "bytes": ...,
               "inputs": [{"name": ..., "shape": [...], "dtype": ...}], "outputs": [...]}, ...},
     "variants": {"int8": {"image_encoder": {...}, ...}}}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "edgetam-kit-onnx"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMAGE_PARTS = ("image_encoder", "mask_decoder")
VIDEO_PARTS = ("memory_attention", "memory_encoder")


class ManifestError(ValueError):
    """An exported folder whose manifest is missing, malformed or does not match its files."""


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_onnx_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder with an edgetam-kit ONNX manifest (cheap: reads the manifest only)."""
    p = Path(path).expanduser() / MANIFEST
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class OnnxManifest:
    folder: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def video(self) -> bool:
        return bool(self.data.get("video"))

    @property
    def weights_id(self) -> str | None:
        return self.data.get("weights_id")

    def variants(self) -> list[str]:
        """Precision variants written beside fp32 (``"int8"``, ``"fp16"``)."""
        return sorted(self.data.get("variants", {}))

    def entry(self, part: str, variant: str | None = None) -> dict[str, Any] | None:
        """The manifest entry of ``part`` (``IMAGE_PARTS``/``VIDEO_PARTS``) in ``variant`` (None: fp32);
        a variant without its own file for ``part`` falls back to the fp32 one."""
        if variant is not None:
            found = self.data.get("variants", {}).get(variant, {}).get(part)
            if found is not None:
                return found
        return self.data["files"].get(part)

    def path(self, part: str, variant: str | None = None) -> Path:
        e = self.entry(part, variant)
        if e is None:
            raise ManifestError(f"{self.folder}: the export has no {part} graph"
                                + ("" if self.video or part in IMAGE_PARTS else " (image-only export: no video files)"))
        return self.folder / e["path"]

    def verify(self) -> None:
        """Check every listed file exists with its recorded size and sha256; ``ManifestError`` names the file."""
        entries = list(self.data["files"].values())
        for v in self.data.get("variants", {}).values():
            entries.extend(v.values())
        entries.extend(self.data.get("extra_files", []))
        for e in entries:
            p = self.folder / e["path"]
            if not p.is_file():
                raise ManifestError(f"{p}: listed in {self.folder / MANIFEST} but missing")
            if p.stat().st_size != e["bytes"] or sha256_of(p) != e["sha256"]:
                raise ManifestError(f"{p}: checksum mismatch with {self.folder / MANIFEST} (the file was changed or "
                                    "truncated after export; export again)")


def read_manifest(folder: str | Path, verify: bool = True) -> OnnxManifest:
    """Read (and by default verify) the manifest of an exported folder."""
    folder = Path(folder).expanduser()
    p = folder / MANIFEST
    if not p.is_file():
        raise ManifestError(f"folder: {folder} has no {MANIFEST}; export one with ek.export_onnx(model, folder)")
    try:
        data = json.loads(p.read_text())
    except ValueError as exc:
        raise ManifestError(f"{p} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
        raise ManifestError(f"{p} is not an edgetam-kit ONNX manifest (format {FORMAT!r})")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ManifestError(f"{p}: format_version {data['format_version']} is newer than this edgetam-kit reads "
                            f"({FORMAT_VERSION}); upgrade edgetam-kit")
    for part in IMAGE_PARTS:
        if part not in data["files"]:
            raise ManifestError(f"{p}: no {part} entry")
    m = OnnxManifest(folder, data)
    if verify:
        m.verify()
    return m
