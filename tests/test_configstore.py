"""The one box.toml writer (firmware/operations/configstore.py) on a box whose box.toml is a plain file.

The generation-managed case (box.toml linked into provisioning generations) is tested with the
provisioning helpers in tests/test_provisioning.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from firmware.config import ConfigError
from firmware.operations import configstore
from firmware.store import audit
from firmware.store.db import Database

BOX_TOML = '[api]\nport = 1\n[token]\nmodule = "m.so"\nlabel = "t"\n[signing]\nkey_label = "a"\ntsa_urls = ["http://tsa"]\n'


def _entries(state_dir: Path) -> list[dict]:
    return list(audit.export(Database(state_dir / "box.db").connect()))


def test_update_is_crash_safe_keeps_other_settings_and_is_audited(tmp_path: Path):
    (tmp_path / "box.toml").write_text(BOX_TOML)
    change = configstore.update(tmp_path, {"signing": {"key_label": "b", "tsa_urls": None}, "console": {"port": 9}},
                                actor="admin:root", action="settings.change", details={"why": "test"})
    raw = tomllib.loads((tmp_path / "box.toml").read_text())
    assert raw == {"api": {"port": 1}, "token": {"module": "m.so", "label": "t"}, "signing": {"key_label": "b"},
                   "console": {"port": 9}}
    assert not list(tmp_path.glob(".box.toml.tmp-*"))  # no temporary file left behind
    assert change.generation is None and change.config.key_label == "b"
    assert change.changes == ["signing.key_label a→b", 'signing.tsa_urls ["http://tsa"]→(unset)', "console.port (unset)→9"]
    entry = _entries(tmp_path)[-1]
    assert (entry["actor"], entry["action"], entry["details"]) == (
        "admin:root", "settings.change", {"why": "test", "changes": change.changes})


def test_a_change_that_fails_its_check_or_would_not_load_writes_nothing(tmp_path: Path):
    (tmp_path / "box.toml").write_text(BOX_TOML)

    def refuse(config):
        assert config.key_label == "b"  # the check sees the new configuration
        raise ValueError("test signature failed")

    with pytest.raises(ValueError, match="test signature failed"):
        configstore.update(tmp_path, {"signing": {"key_label": "b"}}, actor="admin:root", action="x", details={},
                           check=refuse)
    with pytest.raises(ConfigError, match="module"):
        configstore.update(tmp_path, {"token": {"module": None}}, actor="admin:root", action="x", details={})
    assert (tmp_path / "box.toml").read_text() == BOX_TOML
    assert _entries(tmp_path) == []
