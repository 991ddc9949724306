"""Changing box.toml from the console: merge, write crash-safely, never half a file.

The new text is written through firmware.durable: after a power cut box.toml is either the old
or the new one. tomli-w writes the file, so comments of a hand-written box.toml are not kept; a
header says so.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from firmware.config import CONFIG_NAME
from firmware.durable import write_durable

HEADER = ("# E-signature Box configuration. Last written by the admin console, which keeps no comments;\n"
          "# every setting is described in README.md (\"Configuration\").\n\n")


def merged(raw: dict[str, Any], changes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``raw`` with ``changes`` applied per section; a value of None removes the setting."""
    result = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section, values in changes.items():
        target = result.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return result


def render(raw: dict[str, Any]) -> str:
    return HEADER + tomli_w.dumps(raw)


def update(state_dir: Path, changes: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """Apply ``changes`` to box.toml; returns (old text, new text) so a caller can roll back."""
    path = state_dir / CONFIG_NAME
    old = path.read_text()
    new = render(merged(tomllib.loads(old), changes))
    write_durable(path, new.encode())
    return old, new


def restore(state_dir: Path, text: str) -> None:
    write_durable(state_dir / CONFIG_NAME, text.encode())
