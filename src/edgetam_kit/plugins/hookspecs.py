"""Hook specifications (specs only) for edgetam-kit plugins.

A plugin is any module or object with functions decorated by ``edgetam_kit.hookimpl``,
advertised under the ``edgetam_kit`` entry-point group. Every hook returns a list;
the plugin manager concatenates the lists of all plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

PROJECT = "edgetam_kit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class CheckpointSpec:
    """A named checkpoint.

    source: a Hugging Face hub id (``owner/name``), a local folder or a local file.
    filename: for a hub id, the file to fetch (``edgetam.pt`` for the original layout);
    None means an HF-style folder (config.json + safetensors).
    config: preset name used when the format carries no config (the original ``.pt``).
    build: for a model made in code rather than read from files: ``build(seed=0) -> EdgeTam``
    (``source`` is then only shown in listings). A name ``NAME?seed=N`` passes ``seed=N``.
    random_weights: True when ``build`` gives random weights: the model and everything
    written from it are labelled as random (``random:edgetam``, ``random:tiny``).
    """

    name: str
    source: str
    filename: str | None = None
    config: str = "edgetam"
    description: str = ""
    build: Callable[..., Any] | None = None
    random_weights: bool = False


@dataclass(frozen=True)
class Exporter:
    """A named output format.

    write: ``write(items, out, progress=None) -> list[Path]`` where ``items`` is a list of
    ``edgetam_kit.export.MaskSet`` (one per image: name, size, annotations, image) and
    ``out`` a ``pathlib.Path`` (a file or a folder, as the format decides); returns the
    paths written; per-image files are named after ``item.stem`` (unique among the items:
    ``export_masks`` fills it). suffix: what it writes (".json", ".tif", ".zarr", ...), for help texts.
    combined: True when all images go into one file (COCO): callers then collect every
    image's masks before one ``write``; otherwise they may call ``write`` per image.
    """

    name: str
    write: Callable[..., Any]
    suffix: str = ""
    description: str = ""
    combined: bool = False


@dataclass(frozen=True)
class FrameSourceOpener:
    """Opens one kind of input as a ``FrameSource`` (see ``edgetam_kit.sources``).

    can_open(source) -> bool: cheap test (look at the type or the path's suffix; read nothing big).
    open(source, **options) -> FrameSource: the frames (T, H, W[, C]), read lazily.
    priority: openers are tried highest first; built-ins use -100, so a plugin at the
    default 0 wins over them. Ties: the plugin registered last is tried first.
    """

    name: str
    can_open: Callable[[Any], bool]
    open: Callable[..., Any]
    priority: int = 0


@dataclass(frozen=True)
class Backend:
    """A named runtime. ``prepare(model, precision)`` returns the model's ``edgetam_kit.runtime.Runtime``;
    ``available()`` says whether it can run here (e.g. a compiler is installed)."""

    name: str
    prepare: Callable[[Any, str], Any]  # -> edgetam_kit.runtime.Runtime
    description: str = ""
    available: Callable[[], bool] = lambda: True



@hookspec
def edgetam_kit_checkpoints() -> list[CheckpointSpec]:
    """Return named checkpoints this plugin provides (names must be unique across plugins)."""


@hookspec
def edgetam_kit_frame_sources() -> list[FrameSourceOpener]:
    """Return frame-source openers for new formats (used by ``open_source`` and the tracker).

    Built-in arrays, image folders, TIFF stacks and videos are registered through this hook too.
    """


@hookspec
def edgetam_kit_exporters() -> list[Exporter]:
    """Return exporters (``Exporter``) that write results in new formats; a later plugin's
    exporter replaces an earlier one of the same name."""


@hookspec
def edgetam_kit_backends() -> list[Backend]:
    """Return runtimes (``Backend``: a name and ``prepare(model, precision)
    -> Runtime``), e.g. compiled or ONNX. The built-in ``eager`` (the default of ``load_model``)
    and ``compiled`` backends are registered through this hook; a later plugin's backend
    replaces an earlier one of the same name."""
