"""A checkpoint the widget cannot load, explained in the widget's terms (the model box, File…,
Folder… and Load), not the Python API's or the CLI's. No napari import."""

from __future__ import annotations

FIX = ("pick a checkpoint with File… (edgetam.pt, .safetensors) or Folder… (config.json + model.safetensors), "
       "or type its path or a named checkpoint ({names}) in the model box and press Load")


class ModelNotFound(FileNotFoundError):
    """A checkpoint the widget could not find or read, explained in the widget's terms."""


def model_error_text(source: str, exc: BaseException) -> str:
    """Why ``source`` could not be loaded, in the widget's terms."""
    from ..io.checkpoint import resolve_source
    from ..plugins.manager import get_plugin_manager

    kind, path, spec = resolve_source(source)
    fix = FIX.format(names=", ".join(sorted(get_plugin_manager().checkpoints())) or "none registered")
    hub_id = spec.source if spec is not None else source
    offline = (f"it is not in the local Hugging Face cache and the hub cannot be reached (offline). Download it on "
               f"a connected machine (`hf download {hub_id}`), copy the folder here, then Folder…; or {fix}")
    if kind == "name":
        return f"'{source}' is a named checkpoint ({hub_id} on the hub), but {offline}"
    if kind == "hub":
        return f"'{source}' looks like a hub id, but {offline}"
    if kind == "missing":
        return f"'{source}': no such file or folder; {fix}"
    if path is not None and path.is_dir():
        return f"the folder '{source}' holds no EdgeTAM checkpoint; {fix}"
    return f"'{source}' could not be read as an EdgeTAM checkpoint ({type(exc).__name__}: {exc}); {fix}"
