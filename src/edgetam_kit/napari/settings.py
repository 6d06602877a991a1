"""What the widget remembers between sessions: a small JSON file in the user's config folder.

``EDGETAM_KIT_NAPARI_SETTINGS`` names another file (tests point it at a temporary folder).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

ENV_SETTINGS = "EDGETAM_KIT_NAPARI_SETTINGS"
MAX_RECENT = 8


@dataclass
class Settings:
    """model: the checkpoint last loaded (path, registered name or hub id); recent: earlier ones,
    newest first; cache_dir: embedding cache folder ("" = off); project: the project folder where
    every commit is saved ("" = none)."""

    model: str = ""
    recent: list[str] = field(default_factory=list)
    cache_dir: str = ""
    project: str = ""

    def remember_model(self, source: str) -> None:
        self.model = source
        self.recent = [source] + [r for r in self.recent if r != source][: MAX_RECENT - 1]


def settings_path() -> Path:
    env = os.environ.get(ENV_SETTINGS)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "edgetam-kit" / "napari.json"


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return str(Path(base) / "edgetam-kit" / "embeddings")


def load_settings() -> Settings:
    """The saved settings, or defaults when the file is missing or unreadable."""
    path = settings_path()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return Settings(cache_dir=default_cache_dir())
    if not isinstance(raw, dict):
        return Settings(cache_dir=default_cache_dir())
    known = {k: raw[k] for k in ("model", "recent", "cache_dir", "project") if k in raw}
    known.setdefault("cache_dir", default_cache_dir())
    s = Settings(**known)
    s.recent = [str(r) for r in s.recent if isinstance(r, str)][:MAX_RECENT]
    return s


def save_settings(settings: Settings) -> None:
    """Write atomically (temporary file, then rename)."""
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(settings), indent=2))
    tmp.replace(path)
