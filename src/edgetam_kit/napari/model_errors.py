"""A checkpoint the widget cannot load, explained in the widget's terms (the model box and
Load), not the Python API's or the CLI's. No napari import."""

from __future__ import annotations


class ModelNotFound(FileNotFoundError):
    """A checkpoint the widget could not find, explained in the widget's terms."""


def model_error_text(source: str, exc: BaseException) -> str:
    """Why ``source`` could not be loaded, in the widget's terms (the model box and Load)."""
    from ..io.checkpoint import resolve_source
    from ..plugins.manager import get_plugin_manager

    kind, _path, _spec = resolve_source(source)
    names = ", ".join(sorted(get_plugin_manager().checkpoints())) or "none"
    fix = (f"type a local folder or edgetam.pt in the model box (or a registered name: {names}), "
           "then press Load")
    if kind == "hub":
        return (f"'{source}' looks like a hub id, but it is not in the local Hugging Face cache and the hub "
                f"cannot be reached (offline). Download it on a connected machine (`hf download {source}`), "
                f"copy the folder here, and {fix}")
    if kind == "missing":
        return f"'{source}': no such file or folder; {fix}"
    return f"'{source}' could not be read as an EdgeTAM checkpoint ({type(exc).__name__}); {fix}"
