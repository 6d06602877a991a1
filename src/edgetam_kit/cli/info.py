"""``edgetam info`` and ``edgetam plugins``: versions, devices, checkpoint names, plugins and their errors."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import sub

if TYPE_CHECKING:
    from ..plugins.manager import PluginManager


def versions() -> list[tuple[str, str]]:
    """(name, value) rows for the runtime: package versions, threads, devices."""
    import timm
    import torch

    from .. import __version__

    cuda = f"yes ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "no"
    return [("edgetam-kit", __version__), ("python", f"{platform.python_version()} ({sys.executable})"),
            ("torch", torch.__version__), ("timm", timm.__version__),
            ("torch threads", str(torch.get_num_threads())), ("cuda", cuda)]


def describe_source(source: str) -> str:
    """Where ``source`` resolves, without downloading anything."""
    from ..io.checkpoint import resolve_source

    kind, path, spec = resolve_source(source)
    if kind == "missing":
        raise FileNotFoundError(f"--checkpoint: {source!r} is not an existing path, a registered checkpoint "
                                "name (see `edgetam info`) or a hub id (owner/name)")
    if kind == "path":
        assert path is not None
        what = "folder (HF layout: config.json + model.safetensors)" if path.is_dir() else "file"
        return f"local {what}: {path.resolve()}"
    assert spec is not None
    where = "registered name" if kind == "name" else "hub id"
    if spec.build is not None and spec.random_weights:
        return f"{where} -> RANDOM weights, {spec.config} preset (nothing to download; outputs are not meaningful)"
    if spec.build is not None:
        return f"{where} -> built in code ({spec.config} preset; nothing to download)"
    target = spec.source + (f" (file {spec.filename})" if spec.filename else "")
    if Path(spec.source).expanduser().exists():
        return f"{where} -> local {target}"
    return f"{where} -> hub {target}; {hub_cache_state(spec.source, spec.filename)}"


def hub_cache_state(repo_id: str, filename: str | None) -> str:
    """Whether a hub checkpoint is in the local Hugging Face cache, and if not whether it could be
    downloaded here (HF_HUB_OFFLINE, or a short connection attempt to the hub; nothing is fetched)."""
    from ..io.checkpoint import _hub_offline, _hub_reachable

    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, filename or "config.json")
    except Exception:  # an odd repo id or cache layout: say we do not know
        return "cache state unknown"
    if isinstance(hit, str):
        return f"in the local cache: {hit}"
    if _hub_offline():
        return "NOT available: not in the local cache and HF_HUB_OFFLINE is set (download it on a connected machine)"
    if not _hub_reachable():
        return "NOT available: not in the local cache and the hub cannot be reached (offline?)"
    return "not in the local cache (would be downloaded on first use)"


def plugin_errors() -> list[str]:
    """Distinct plugin errors recorded so far, one line each (the manager records repeats)."""
    from ..plugins.manager import get_plugin_manager

    return list(dict.fromkeys(f"{e.plugin} ({e.stage}): {e.error}" for e in get_plugin_manager().errors))


def cmd_info(args: argparse.Namespace) -> int:
    """``edgetam info``: versions, devices, checkpoint names, plugins."""
    from ..plugins.manager import get_plugin_manager

    pm = get_plugin_manager()
    for name, value in versions():
        print(f"{name:<14} {value}")
    print("checkpoints:")
    for name, spec in pm.checkpoints().items():
        target = spec.source + (f" ({spec.filename})" if spec.filename else "")
        print(f"  {name:<18} {target}" + (f"  - {spec.description}" if spec.description else ""))
    print(f"plugins:       {', '.join(pm.plugin_names()) or 'none'}")
    print(f"plugin errors: {'; '.join(plugin_errors()) or 'none'}")
    if args.checkpoint:
        print(f"checkpoint:    {args.checkpoint} -> {describe_source(args.checkpoint)}")
    return 0


def check_plugin_backends(pm: "PluginManager") -> None:
    """Try each plugin's backend once (``available()``, then ``prepare`` on a tiny random model), so a
    backend that would fail at ``load_model`` is listed among the plugin errors; built-ins are not tried."""
    import torch

    from ..runtime import Runtime
    from ..testing.random_weights import build_random_model

    backends = {name: b for name, b in pm.backends().items()
                if not pm.is_builtin(pm.backend_plugins.get(name, "?"))}
    model = build_random_model("tiny", video=False) if backends else None
    for name, backend in backends.items():
        plugin = pm.backend_plugins.get(name, "?")
        try:
            if not backend.available():
                continue
            with torch.no_grad():
                rt = backend.prepare(model, "fp32")
            if not isinstance(rt, Runtime):
                raise TypeError(f"backend {name!r} returned {type(rt).__name__}, not a Runtime")
        except Exception as exc:
            pm.report(plugin, f"backend {name!r} prepare", exc)


HOOKS = ("edgetam_kit_checkpoints", "edgetam_kit_frame_sources", "edgetam_kit_exporters", "edgetam_kit_backends")


def cmd_plugins(args: argparse.Namespace) -> int:
    """``edgetam plugins``: loaded plugins, what each hook of theirs contributes, errors."""
    from ..plugins.manager import DISABLE_ENV, get_plugin_manager

    pm = get_plugin_manager()
    contributions: dict[str, dict[str, list[str]]] = {name: {} for name in pm.plugin_names()}
    for hook in HOOKS:
        for plugin, item in pm.call(hook):
            label = str(getattr(item, "name", None) or type(item).__name__)
            contributions.setdefault(plugin, {}).setdefault(hook.removeprefix("edgetam_kit_"), []).append(label)
    check_plugin_backends(pm)
    if os.environ.get(DISABLE_ENV):
        print(f"({DISABLE_ENV} is set: entry-point plugins are not loaded)")
    for plugin, hooks in contributions.items():
        print(plugin)
        for hook, items in hooks.items():
            print(f"  {hook}: {', '.join(items)}")
        if not hooks:
            print("  (no contributions)")
    errors = plugin_errors()
    print("errors:" if errors else "errors: none")
    for line in errors:
        print(f"  {line}")
    return 0


def add_info_parsers(subs: argparse._SubParsersAction) -> None:
    p = sub(subs, "info", "Show versions, devices, checkpoint names and plugins.", "edgetam info --checkpoint edgetam")
    p.add_argument("--checkpoint", metavar="SRC", help="also say where SRC resolves (nothing is downloaded)")
    p.set_defaults(func=cmd_info)
    p = sub(subs, "plugins", "List loaded plugins, what they contribute, and plugin errors.", "edgetam plugins")
    p.set_defaults(func=cmd_plugins)
