"""The plugin manager: entry-point discovery, built-ins registered like plugins, broken
plugins reported and skipped, EDGETAM_KIT_DISABLE_PLUGINS."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import edgetam_kit as ek
from edgetam_kit.plugins import PluginManager


@pytest.fixture
def installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two distributions on sys.path advertising `edgetam_kit` entry points, the way an
    installed plugin does: one good, one that raises on import."""
    (tmp_path / "good_plugin.py").write_text(textwrap.dedent('''
        import edgetam_kit as ek

        @ek.hookimpl
        def edgetam_kit_checkpoints():
            return [ek.CheckpointSpec("lab-model", "lab/edgetam-finetuned", description="our fine-tune")]
    '''))
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('missing dependency: foo')\n")
    (tmp_path / "bad_hook_plugin.py").write_text(textwrap.dedent('''
        import edgetam_kit as ek

        @ek.hookimpl
        def edgetam_kit_checkpoints():
            raise RuntimeError("boom")
    '''))
    for name in ("good_plugin", "broken_plugin", "bad_hook_plugin"):
        dist = tmp_path / f"{name}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[edgetam_kit]\n{name} = {name}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("good_plugin", "broken_plugin", "bad_hook_plugin"):
        sys.modules.pop(name, None)


def test_builtins_are_plugins() -> None:
    pm = PluginManager.create(autoload=False)
    assert pm.plugin_names() == ["builtin"]
    names = pm.checkpoints()
    assert names["edgetam"].source == "yonigozlan/EdgeTAM-hf"
    assert names["edgetam-original"].filename == "edgetam.pt"


def test_entry_points_load_and_broken_ones_are_skipped(installed_plugins: Path, monkeypatch) -> None:
    monkeypatch.delenv("EDGETAM_KIT_DISABLE_PLUGINS", raising=False)
    with pytest.warns(UserWarning, match="broken_plugin"):
        pm = PluginManager.create()
    assert "good_plugin" in pm.plugin_names()
    with pytest.warns(UserWarning, match="bad_hook_plugin.*boom"):
        names = pm.checkpoints()
    assert names["lab-model"].source == "lab/edgetam-finetuned"
    assert "edgetam" in names  # built-ins still there
    stages = {(e.plugin, e.stage) for e in pm.errors}
    assert ("broken_plugin", "load") in stages
    assert ("bad_hook_plugin", "edgetam_kit_checkpoints") in stages


def test_disable_env(installed_plugins: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGETAM_KIT_DISABLE_PLUGINS", "1")
    pm = PluginManager.create()
    assert pm.plugin_names() == ["builtin"]
    assert "lab-model" not in pm.checkpoints()


def test_plugin_returning_wrong_type_is_reported() -> None:
    pm = PluginManager.create(autoload=False)

    class Wrong:
        @ek.hookimpl
        def edgetam_kit_checkpoints(self):
            return [{"name": "x"}]

    pm.register(Wrong(), name="wrong")
    with pytest.warns(UserWarning, match="not CheckpointSpec"):
        assert "x" not in pm.checkpoints()
