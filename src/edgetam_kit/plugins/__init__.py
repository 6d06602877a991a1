"""Extension points: hook specifications (``hookspecs``), the manager facade (``manager``) and
the built-in plugins (``builtin``, registered through the entry-point group like any other)."""

from .hookspecs import Backend, CheckpointSpec, Exporter, FrameSourceOpener, hookimpl
from .manager import DISABLE_ENV, PluginError, PluginManager, get_plugin_manager, reset_plugin_manager

__all__ = ["Backend", "CheckpointSpec", "Exporter", "FrameSourceOpener", "hookimpl", "DISABLE_ENV", "PluginError",
           "PluginManager", "get_plugin_manager", "reset_plugin_manager"]
