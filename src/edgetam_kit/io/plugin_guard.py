"""Plugins that fail at work, not at load: an exporter whose ``write`` raises, a frame source whose
frames cannot be read. The failure is reported against the plugin (``PluginManager.errors`` and a
warning, once) and the built-in is used instead: the built-in exporter of the same name, or the next
opener that accepts the source. Where no built-in can stand in, the caller gets one ``ValueError``
naming the plugin (the CLI prints it as one line, never a traceback).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np

_source_plugins: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()
_source_ids: dict[int, str] = {}  # sources that take no weak reference


def _manager(plugin_manager: Any = None) -> Any:
    if plugin_manager is not None:
        return plugin_manager
    from ..plugins.manager import get_plugin_manager

    return get_plugin_manager()


# ----------------------------------------------------------------------------- exporters
def write_masks(name: str, items: Any, out: Path, progress: Any = None, plugin_manager: Any = None) -> list[Path]:
    """Write ``items`` with the exporter called ``name``. A plugin's exporter that raises (or returns
    no list of paths) is reported and the built-in exporter of that name writes instead; with no
    built-in of that name, ValueError naming the plugin."""
    pm = _manager(plugin_manager)
    found = pm.exporters()
    if name not in found:
        raise ValueError(f"format must be one of {', '.join(sorted(found))}, got {name!r}")
    plugin = pm.exporter_plugins.get(name, "?")
    if pm.is_builtin(plugin):
        return list(found[name].write(items, out, progress=progress))
    try:
        written = found[name].write(items, out, progress=progress)
        paths = [Path(p) for p in written]
    except Exception as exc:  # a plugin's bug must not lose the user's results
        pm.report(plugin, f"exporter {name!r} write", exc)
        builtin = pm.builtin_exporters.get(name)
        if builtin is None:
            raise ValueError(f"format {name!r}: the exporter of plugin {plugin!r} failed "
                             f"({type(exc).__name__}: {exc}); no built-in {name!r} exporter to fall back to") from exc
        return list(builtin.write(items, out, progress=progress))
    return paths


# ----------------------------------------------------------------------------- frame sources
def probe_source(src: Any) -> None:
    """Read what every user of a source reads first (length, shape, dtype, frame 0); raises what
    the source raises, or ValueError when frame 0 does not have the announced shape."""
    n, shape, dtype = len(src), tuple(src.shape), np.dtype(src.dtype)
    if n > 0:
        first = np.asarray(src.frame(0))
        if tuple(first.shape) != shape[1:] or first.dtype != dtype:
            raise ValueError(f"frame 0 has shape {first.shape} and dtype {first.dtype}, but the source says "
                             f"{shape[1:]} and {dtype}")


def remember_source(src: Any, plugin: str) -> None:
    """Note that ``src`` came from ``plugin`` (so read failures name it)."""
    try:
        _source_plugins[src] = plugin
    except TypeError:
        _source_ids[id(src)] = plugin


def plugin_of_source(src: Any) -> str | None:
    try:
        found = _source_plugins.get(src)
    except TypeError:
        found = None
    return found if found is not None else _source_ids.get(id(src))


def read_frame(src: Any, i: int) -> np.ndarray:
    """``src.frame(i)``; a plugin source's failure (any exception) becomes a ValueError naming the plugin
    and is reported against it. Built-in sources already raise ValueError naming the file."""
    try:
        return src.frame(i)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        plugin = plugin_of_source(src)
        if plugin is None:
            raise
        _manager().report(plugin, "frame source read", exc)
        raise ValueError(f"source: frame {i} cannot be read by the frame source of plugin {plugin!r} "
                         f"({type(exc).__name__}: {exc})") from exc
