"""Plugin manager facade over the ``edgetam_kit`` entry-point group.

The built-in plugins (``plugins/builtin.py``) are advertised in that group like any third
party's and loaded by name; when the distribution's entry points are not visible (the package
used from a source tree without being installed) the same module is loaded by its name.

A plugin that fails to import or whose hook raises is reported (``PluginManager.errors``
and a warning) and skipped; it never takes the host down. ``EDGETAM_KIT_DISABLE_PLUGINS=1``
turns entry-point autoload off (built-ins stay).
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .hookspecs import PROJECT, Backend, CheckpointSpec, Exporter, FrameSourceOpener

DISABLE_ENV = "EDGETAM_KIT_DISABLE_PLUGINS"
BUILTIN = ("builtin", "edgetam_kit.plugins.builtin")  # entry-point name and module of the built-ins


@dataclass
class PluginError:
    plugin: str
    stage: str  # "load" or the hook name
    error: str


@dataclass
class PluginManager:
    pm: pluggy.PluginManager
    errors: list[PluginError] = field(default_factory=list)
    backend_plugins: dict[str, str] = field(default_factory=dict)  # backend name -> the plugin supplying it
    exporter_plugins: dict[str, str] = field(default_factory=dict)  # exporter name -> the plugin supplying it
    builtin_exporters: dict[str, Exporter] = field(default_factory=dict)  # the built-ins, for falling back
    opener_plugins: dict[str, str] = field(default_factory=dict)  # frame-source opener name -> its plugin

    @classmethod
    def create(cls, autoload: bool | None = None) -> "PluginManager":
        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(hookspecs)
        self = cls(pm)
        if autoload is None:
            autoload = os.environ.get(DISABLE_ENV, "").strip() not in ("1", "true", "yes")
        self._load_entry_points(only_builtin=not autoload)
        if pm.get_plugin(BUILTIN[0]) is None:  # not installed: the built-ins by module name
            try:
                pm.register(importlib.import_module(BUILTIN[1]), name=BUILTIN[0])
            except Exception as exc:
                self._report(BUILTIN[0], "load", exc)
        return self

    def _load_entry_points(self, only_builtin: bool = False) -> None:
        for ep in entry_points(group=PROJECT):
            if only_builtin and (ep.name, ep.value) != BUILTIN:
                continue
            try:
                plugin = ep.load()
                if self.pm.get_plugin(ep.name) is None:
                    self.pm.register(plugin, name=ep.name)
            except (Exception, SystemExit) as exc:  # a broken plugin (even one calling sys.exit) never ends the host
                self._report(ep.name, "load", exc)

    def _report(self, plugin: str, stage: str, exc: BaseException) -> None:
        err = PluginError(plugin, stage, f"{type(exc).__name__}: {exc}")
        if err in self.errors:  # hooks are called many times; report each failure once
            return
        self.errors.append(err)
        text = f"edgetam-kit plugin {plugin!r} failed at {stage}: {err.error}; skipped"
        try:
            warnings.warn(text, stacklevel=3)
        except Warning:  # warnings turned into errors (-W error): report, never raise into the host
            print(f"warning: {text}", file=sys.stderr)

    def report(self, plugin: str, stage: str, exc: BaseException) -> None:
        """Record and warn about a plugin's failure (once per plugin, stage and error)."""
        self._report(plugin, stage, exc)

    def is_builtin(self, plugin: str) -> bool:
        """Whether ``plugin`` (a name from ``*_plugins``) is edgetam-kit's own."""
        return plugin == BUILTIN[0]

    def register(self, plugin: Any, name: str | None = None) -> None:
        self.pm.register(plugin, name=name)

    def plugin_names(self) -> list[str]:
        return [name for name, _ in self.pm.list_name_plugin()]

    def call(self, hook: str) -> list[tuple[str, Any]]:
        """Call ``hook`` on each plugin separately; returns (plugin name, item) pairs."""
        results: list[tuple[str, Any]] = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                items = impl.function() or []
                results.extend((impl.plugin_name, item) for item in items)
            except Exception as exc:
                self._report(impl.plugin_name, hook, exc)
        return results

    def checkpoints(self) -> dict[str, CheckpointSpec]:
        """Named checkpoints from every plugin; a plugin registered later overrides a name
        (so an installed plugin can re-point a built-in name at a mirror)."""
        found: dict[str, CheckpointSpec] = {}
        for plugin, spec in self.call("edgetam_kit_checkpoints"):
            if not isinstance(spec, CheckpointSpec):
                self._report(plugin, "edgetam_kit_checkpoints", TypeError(f"returned {type(spec).__name__}, not CheckpointSpec"))
                continue
            bad = [f"{field}={getattr(spec, field)!r}" for field, ok in (
                ("name", isinstance(spec.name, str) and spec.name != ""),
                ("source", isinstance(spec.source, (str, os.PathLike))),
                ("filename", spec.filename is None or isinstance(spec.filename, str)),
                ("config", isinstance(spec.config, str)),
                ("build", spec.build is None or callable(spec.build))) if not ok]
            if bad:  # attributed to the plugin here, not a TypeError deep inside load_model
                self._report(plugin, "edgetam_kit_checkpoints", TypeError(
                    f"CheckpointSpec {', '.join(bad)}: name, source (a path or hub id) and config must be str, "
                    "filename None or str, build None or callable"))
                continue
            found[spec.name] = spec
        return found

    def exporters(self) -> dict[str, Exporter]:
        """Output formats from every plugin, by name (a plugin registered later overrides a name)."""
        found: dict[str, Exporter] = {}
        for plugin, exp in self.call("edgetam_kit_exporters"):
            if not isinstance(exp, Exporter) or not callable(exp.write):
                wrong = TypeError(f"returned {type(exp).__name__}, not an Exporter with a callable write")
                self._report(plugin, "edgetam_kit_exporters", wrong)
                continue
            found[exp.name] = exp
            self.exporter_plugins[exp.name] = plugin
            if plugin == BUILTIN[0]:
                self.builtin_exporters[exp.name] = exp
        return found

    def backends(self) -> dict[str, Any]:
        """Runtimes (``Backend``) from every plugin, by name (a later plugin overrides a name)."""
        found: dict[str, Any] = {}
        for plugin, backend in self.call("edgetam_kit_backends"):
            if not isinstance(backend, Backend) or not callable(backend.prepare):
                wrong = TypeError(f"returned {type(backend).__name__}, not a runtime.Backend with a callable prepare")
                self._report(plugin, "edgetam_kit_backends", wrong)
                continue
            found[backend.name] = backend
            self.backend_plugins[backend.name] = plugin
        return found

    def frame_source_openers(self) -> list[FrameSourceOpener]:
        """Frame-source openers from every plugin, in the order ``open_source`` tries them:
        highest priority first; among equals, the plugin registered last first (a plugin's
        own list keeps its order)."""
        items = self.call("edgetam_kit_frame_sources")
        rank = {name: k for k, name in enumerate(dict.fromkeys(plugin for plugin, _ in items))}
        found: list[tuple[int, int, FrameSourceOpener]] = []
        for j, (plugin, opener) in enumerate(items):
            if not isinstance(opener, FrameSourceOpener):
                wrong = TypeError(f"returned {type(opener).__name__}, not FrameSourceOpener")
                self._report(plugin, "edgetam_kit_frame_sources", wrong)
                continue
            found.append((rank[plugin], j, opener))
            self.opener_plugins[opener.name] = plugin
        found.sort(key=lambda t: (-t[2].priority, -t[0], t[1]))
        return [opener for _, _, opener in found]


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _manager
    if _manager is None:
        _manager = PluginManager.create()
    return _manager


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests; after installing a plugin)."""
    global _manager
    _manager = None
