"""Load and save EdgeTAM weights.

Formats read:
- a Hugging Face folder: ``config.json`` + ``model.safetensors`` (or a sharded
  ``model.safetensors.index.json``), as ``EdgeTamModel``/``EdgeTamVideoModel.save_pretrained`` write it;
- a hub id (``owner/name``), fetched through huggingface_hub (cache first);
- the original release, ``edgetam.pt`` holding ``{"model": state_dict}``;
- a checkpoint name registered through the ``edgetam_kit_checkpoints`` hook (the built-in
  ``random:edgetam`` / ``random:tiny`` build random weights, labelled on the model: ``random_weights_of``);
- a LoRA adapter folder (``io.adapter``): its base source loaded as above, the adapter merged in.

Loading is strict: missing, unexpected or mis-shaped tensors raise one ``ValueError``
listing them. A checkpoint with video-model tensors (memory encoder, perceiver, memory
attention) gives a model that can track (``model.has_video``); image-only ones cannot.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch

from .hf_config import CheckpointError, config_from_hf, config_to_hf  # noqa: F401  (re-exported)
from .checkpoint_keys import is_video_key, original_to_hf, original_video_to_hf
from ..config import EdgeTamConfig, get_config
from ..plugins.hookspecs import CheckpointSpec
from ..modeling import EdgeTam

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------- configs
def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files: list[Path]
    if (folder / SAFETENSORS).is_file():
        files = [folder / SAFETENSORS]
    elif (folder / SAFETENSORS_INDEX).is_file():
        index = json.loads((folder / SAFETENSORS_INDEX).read_text())
        files = [folder / f for f in sorted(set(index.get("weight_map", {}).values()))]
    else:
        raise FileNotFoundError(
            f"source: folder {folder} has no {SAFETENSORS} (or {SAFETENSORS_INDEX}); "
            "expected an HF EdgeTAM folder with config.json + model.safetensors"
        )
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            sd.update(load_file(str(f)))
        except Exception as exc:  # truncated or corrupt file
            raise CheckpointError(f"source: cannot read {f} ({type(exc).__name__}: {exc}); the file may be truncated") from exc
    return sd


def _read_original(path: Path) -> dict[str, torch.Tensor]:
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"source: cannot read {path} as a torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(blob, dict) and "model" in blob and isinstance(blob["model"], dict):
        return blob["model"]
    if isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):
        return blob
    raise CheckpointError(f"source: {path} is not an EdgeTAM checkpoint (expected {{'model': state_dict}})")


_OCCLUSION = "occlusion_spatial_embedding_parameter"
_UNSUPPORTED_VIDEO = ("temporal_positional_encoding_projection_layer.",)


def _build(config: EdgeTamConfig, sd: dict[str, torch.Tensor], source: str) -> EdgeTam:
    """An EdgeTam shaped for ``sd``: with the video modules when the checkpoint has any."""
    unsupported = sorted(k for k in sd if k.startswith(_UNSUPPORTED_VIDEO))
    if unsupported:
        raise CheckpointError(
            f"source: {source} uses temporal encodings of object pointers ({unsupported[0]}, ...), which "
            "EdgeTAM does not use and edgetam-kit does not implement"
        )
    model = EdgeTam(config)
    if any(is_video_key(k, "hf") for k in sd):
        model.add_video_modules(occlusion_embedding=_OCCLUSION in sd)
    return model


def _assign(model: EdgeTam, sd: dict[str, torch.Tensor], source: str, extra_unknown: list[str]) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own)) + extra_unknown
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointError(f"source: {source} does not match the EdgeTAM {model.config.name!r} config; " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def _load_hf_folder(folder: Path) -> EdgeTam:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"source: folder {folder} has no config.json; expected an HF EdgeTAM folder")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"source: {cfg_path} is not valid JSON ({exc})") from exc
    cfg = config_from_hf(raw)
    sd = _read_safetensors(folder)
    model = _build(cfg, sd, str(folder))
    _assign(model, sd, str(folder), [])
    if isinstance(raw.get(_RANDOM_KEY), str):  # saved from a random:... model: stays labelled
        setattr(model, RANDOM_ATTR, raw[_RANDOM_KEY])
    return model


def _load_original(path: Path, config: EdgeTamConfig) -> EdgeTam:
    sd = _read_original(path)
    image, video, unknown = original_to_hf(sd)
    video_hf, unknown_video = original_video_to_hf(video)
    tensors = {**image, **video_hf}
    model = _build(config, tensors, str(path))
    _assign(model, tensors, str(path), unknown + unknown_video)
    return model


# ----------------------------------------------------------------------------- hub
def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    port = urlparse(endpoint).port or 443
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _fetch_from_hub(repo_id: str, filename: str | None) -> Path:
    """Local path of a hub checkpoint: the cache first, then (if online) a download."""
    import huggingface_hub as hf

    patterns = ["config.json", "*.safetensors", "*.safetensors.index.json"]

    def get(local_only: bool) -> Path:
        if filename:
            return Path(hf.hf_hub_download(repo_id, filename, local_files_only=local_only))
        return Path(hf.snapshot_download(repo_id, allow_patterns=patterns, local_files_only=local_only))

    try:
        return get(local_only=True)
    except Exception:
        pass
    hint = (f"download it on a connected machine (e.g. `hf download {repo_id}`) and pass the local "
            "path: ek.load_model('/path/to/folder-or/edgetam.pt') or --checkpoint PATH")
    if _hub_offline():
        raise FileNotFoundError(f"source: {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}")
    if not _hub_reachable():
        raise FileNotFoundError(
            f"source: {repo_id!r} is no local path, and the Hugging Face hub cannot be reached to fetch it as a "
            f"hub id (offline?); {hint}"
        )
    try:
        return get(local_only=False)
    except Exception as exc:
        raise FileNotFoundError(f"source: could not fetch {repo_id!r} from the hub ({type(exc).__name__}: {exc}); {hint}") from exc


# ----------------------------------------------------------------------------- public
def resolve_source(source: str | os.PathLike) -> tuple[str, Path | None, CheckpointSpec | None]:
    """Say what ``source`` is without loading: ("path" | "name" | "hub", local path or None, spec or None)."""
    from ..plugins.manager import get_plugin_manager

    if isinstance(source, os.PathLike) or Path(str(source)).expanduser().exists():
        return "path", Path(source).expanduser(), None
    text = str(source)
    named = get_plugin_manager().checkpoints()
    if text in named:
        return "name", None, named[text]
    base, _, query = text.partition("?")
    if query and base in named and named[base].build is not None:  # NAME?seed=N of a built checkpoint
        spec = named[base]
        return "name", None, replace(spec, name=text, build=partial(spec.build, seed=_seed_of(text, query)))
    if _looks_like_hub_id(text):
        return "hub", None, CheckpointSpec(name=text, source=text)
    return "missing", Path(text).expanduser(), None


def _seed_of(text: str, query: str) -> int:
    key, _, value = query.partition("=")
    if key != "seed" or not value.isdigit() or int(value) >= 2**63:
        raise ValueError(f"source: {text!r}: the only option of a built checkpoint is ?seed=N (an integer >= 0), "
                         f"e.g. 'random:tiny?seed=1'")
    return int(value)


RANDOM_ATTR = "random_weights"  # set on a model built with random weights: the checkpoint name it came from
_RANDOM_KEY = "edgetam_kit_random_weights"  # the same in a saved folder's config.json


def random_weights_of(model: object) -> str | None:
    """The random checkpoint name (``random:tiny``, ...) a model was built from, or None for real weights."""
    label = getattr(model, RANDOM_ATTR, None)
    return label if isinstance(label, str) else None


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return (len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))
            and not text.endswith((".pt", ".pth", ".safetensors", ".json")))


def load_model(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    config: EdgeTamConfig | str | None = None,
    backend: str | None = None,
    precision: str = "fp32",
) -> EdgeTam:
    """Load EdgeTAM weights from an HF folder, hub id, ``edgetam.pt``, checkpoint name or LoRA
    adapter folder (its base, with the adapter merged before the runtime is built).

    config: only for the original ``.pt`` layout, which stores no config (default preset
    ``edgetam``); HF folders carry their own. backend / precision: the runtime (``ek.optimize``; None:
    "onnx" for an ``ek.export_onnx`` folder, else "eager"; "none": the plain modules). Eval mode."""
    from ..runtime.backends import _parse_precision

    _parse_precision(precision)  # checked before any file is read
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a backend name (str) or None, got {type(backend).__name__}")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, hub id or checkpoint name (str), got {type(source).__name__}")
    if isinstance(config, str):
        config = get_config(config)
    if config is not None and not isinstance(config, EdgeTamConfig):
        raise TypeError(f"config must be an EdgeTamConfig or a preset name, got {type(config).__name__}")
    dtype = _parse_dtype(dtype)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a torch device string such as 'cpu' or 'cuda:0', got {device!r}") from exc
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(f"device must be cpu, cuda[:N], mps or xpu (a device that computes), got {str(device)!r}")

    model, path = _plain_model(source, config)
    model.eval()
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device=device)
    from ..runtime.backends import optimize
    from ..runtime.onnx_backend import adopt_export  # an ek.export_onnx folder runs on "onnx" by default

    backend = adopt_export(model, path, backend) if path is not None else (backend or "eager")
    return optimize(model, backend=backend, precision=precision)


def _plain_model(source: str | os.PathLike, config: EdgeTamConfig | None) -> tuple[EdgeTam, Path | None]:
    """The plain model of ``source`` (CPU, as stored) and its local path (None for built ones and
    LoRA adapter folders, which are their base with the adapter merged: ``io.adapter``)."""
    given_config = config
    kind, path, spec = resolve_source(source)
    if kind == "missing":
        raise FileNotFoundError(
            f"source: {str(source)!r} is not an existing path, a registered checkpoint name or a hub id (owner/name); "
            "pass an HF folder, an edgetam.pt file, a name from `edgetam info`, or a hub id"
        )
    if kind == "path" and not (path / "config.json").is_file():  # full weights win over an adapter beside them
        from .adapter import is_adapter_folder, load_merged

        if is_adapter_folder(path):
            return load_merged(path, lambda base: _plain_model(base, given_config)[0]), None
    if spec is not None and spec.build is not None:
        return _built(spec, config), path
    if spec is not None:
        path = _spec_path(spec)
        if config is None and spec.config:
            config = get_config(spec.config)
    return _read_model(path, config, given_config), path


def _spec_path(spec: CheckpointSpec) -> Path:
    """Local path of a named checkpoint: its own folder/file, or fetched from the hub."""
    if Path(spec.source).expanduser().exists():
        path = Path(spec.source).expanduser()
        return path / spec.filename if spec.filename else path
    return _fetch_from_hub(spec.source, spec.filename)


def _read_model(path: Path, config: EdgeTamConfig | None, given_config: EdgeTamConfig | None) -> EdgeTam:
    if path.is_dir() or path.name == "config.json":
        model = _load_hf_folder(path if path.is_dir() else path.parent)
        if given_config is not None:
            _check_same_config(given_config, model.config, path)
        return model
    if path.suffix in (".pt", ".pth", ".ckpt"):
        return _load_original(path, config or get_config("edgetam"))
    raise CheckpointError(
        f"source: {path} is neither an HF folder (config.json + model.safetensors) nor an original .pt checkpoint"
    )


def _built(spec: CheckpointSpec, config: EdgeTamConfig | None) -> EdgeTam:
    """The model a ``CheckpointSpec.build`` makes (random weights are labelled on the model)."""
    if config is not None and config.name != spec.config:
        raise ValueError(f"config: {spec.name!r} builds the {spec.config!r} preset; leave config=None")
    model = spec.build()
    if not isinstance(model, EdgeTam):
        raise CheckpointError(f"source: {spec.name!r}: its plugin's build() returned {type(model).__name__}, "
                              "not an EdgeTam")
    if spec.random_weights:
        setattr(model, RANDOM_ATTR, spec.name)
    return model


def _check_same_config(given: EdgeTamConfig, found: EdgeTamConfig, path: Path) -> None:
    """HF folders carry their config; a ``config=`` that contradicts it is an error."""
    def shape(c: EdgeTamConfig) -> tuple:
        return (c.image_size, c.image_encoder, c.prompt_encoder, c.mask_decoder)

    if shape(given) != shape(found):
        raise ValueError(
            f"config: {path} carries its own config.json (image_size {found.image_size}); the config= given "
            f"(image_size {given.image_size}) contradicts it — leave config=None for HF folders"
        )


def _parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be None, a torch.dtype or one of {sorted(_DTYPES)}, got {dtype!r}")


def save_model(model: EdgeTam, folder: str | os.PathLike) -> Path:
    """Write ``model`` as an HF folder (config.json + model.safetensors) that
    ``transformers.EdgeTamModel.from_pretrained`` loads. Video-model tensors are written too
    (EdgeTamModel ignores them; ek.load_model reads them back). The write is atomic per file."""
    from safetensors.torch import save_file

    if not isinstance(model, EdgeTam):
        raise TypeError(f"model must be an EdgeTam (from ek.load_model), got {type(model).__name__}")
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder: {folder} exists and is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    cfg = config_to_hf(model.config)
    cfg["dtype"] = str(model.dtype).replace("torch.", "")
    if random_weights_of(model):
        cfg[_RANDOM_KEY] = random_weights_of(model)
    for name, write in ((SAFETENSORS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"})),
                        ("config.json", lambda p: p.write_text(json.dumps(cfg, indent=2)))):
        tmp = folder / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, folder / name)
    return folder
