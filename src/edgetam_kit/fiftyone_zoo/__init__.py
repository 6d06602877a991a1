"""FiftyOne model zoo source for edgetam-kit (``manifest.json`` next to this file).

FiftyOne finds a zoo source when its folder sits under ``fo.config.model_zoo_dir``
(``FIFTYONE_MODEL_ZOO_DIR``); make one there once, in one command (offline with a local
checkpoint: nothing is downloaded, the models point at it)::

    python -m edgetam_kit.fiftyone_zoo install [--checkpoint /models/edgetam.pt]

or from Python ``edgetam_kit.fiftyone_zoo.install(checkpoint=...)``; then
``foz.load_zoo_model("edgetam-kit-image-torch")`` (prompted or automatic masks) and
``foz.load_zoo_model("edgetam-kit-video-torch")`` (tracking).

"Downloading" writes the weights as an HF folder (``ek.save_model``) into that folder's
``edgetam-kit-image-weights/`` or ``edgetam-kit-video-weights/`` (never into the package), from ``EDGETAM_KIT_ZOO_CHECKPOINT`` (a name, path or hub id; default
``edgetam``, i.e. yonigozlan/EdgeTAM-hf). FiftyOne imports this file by path, so it uses
absolute imports only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


FILES = ("manifest.json", "__init__.py")


MODEL_FILES = ("edgetam-kit-image.json", "edgetam-kit-video.json")  # the manifest's base_filename values


def install(model_zoo_dir: str | None = None, name: str = "edgetam-kit",
            checkpoint: str | os.PathLike | None = None) -> Path:
    """Create ``<model_zoo_dir>/<name>/`` (default: FiftyOne's zoo folder) holding symlinks to
    this source's files. With ``checkpoint`` (a local path, name or hub id), both zoo models
    point at it at once (nothing is downloaded: works offline); without, the first
    ``load_zoo_model`` "downloads" ``EDGETAM_KIT_ZOO_CHECKPOINT`` (default ``edgetam``). Returns the folder."""
    if model_zoo_dir is None:
        import fiftyone as fo

        model_zoo_dir = fo.config.model_zoo_dir
    folder = Path(model_zoo_dir).expanduser() / name
    folder.mkdir(parents=True, exist_ok=True)
    for fname in FILES:
        link = folder / fname
        if link.is_symlink() or link.exists():
            if link.resolve() != HERE / fname:
                raise FileExistsError(f"{link} exists and is not a link to {HERE / fname}; remove it or pass name=")
            continue
        link.symlink_to(HERE / fname)
    if checkpoint is not None:
        local = Path(checkpoint).expanduser()
        if not local.exists() and str(checkpoint).startswith((".", "/", "~")):
            raise FileNotFoundError(f"checkpoint: {checkpoint} does not exist")
        target = str(local.resolve()) if local.exists() else str(checkpoint)
        for fname in MODEL_FILES:
            write_pointer(folder / fname, target)
    return folder


WEIGHTS = "edgetam-kit-weights"


def write_pointer(model_path: str | os.PathLike, checkpoint: str | os.PathLike) -> Path:
    """Write the pointer file ``model_path`` = ``{"checkpoint": checkpoint}``."""
    path = Path(model_path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"checkpoint": str(checkpoint)}) + "\n")
    tmp.replace(path)
    return path


def read_pointer(model_path: str | os.PathLike) -> str:
    """The checkpoint a pointer file names (relative paths resolved against its folder)."""
    path = Path(model_path)
    checkpoint = json.loads(path.read_text())["checkpoint"]
    local = path.parent / checkpoint
    return str(local) if not Path(checkpoint).is_absolute() and local.exists() else checkpoint


def download_model(model_name: str, model_path: str) -> None:
    """Save ``EDGETAM_KIT_ZOO_CHECKPOINT`` (default ``edgetam``) as an HF folder beside
    ``model_path`` (shared by the image and video models) and point ``model_path`` at it."""
    import edgetam_kit as ek

    folder = Path(model_path).parent / WEIGHTS
    if not (folder / "config.json").exists():
        source = os.environ.get("EDGETAM_KIT_ZOO_CHECKPOINT", "edgetam")
        ek.save_model(ek.load_model(source), folder)
    write_pointer(model_path, WEIGHTS)


def load_model(model_name: str, model_path: str, **kwargs):
    """The zoo model: ``EdgeTamImageModel`` or ``EdgeTamVideoModel`` over the checkpoint the
    pointer ``model_path`` names (or ``checkpoint=`` in kwargs); other kwargs go to the model."""
    from edgetam_kit.fiftyone import EdgeTamImageModel, EdgeTamVideoModel

    if "checkpoint" not in kwargs:
        kwargs["checkpoint"] = read_pointer(model_path)
    if "video" in model_name:
        return EdgeTamVideoModel(**kwargs)
    return EdgeTamImageModel(**kwargs)
