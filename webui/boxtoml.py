"""Changing box.toml from the console: merge, write crash-safely, never half a file.

The new text goes to a temporary file in the same directory, is fsync'ed, renamed over box.toml
(atomic on POSIX) and the directory is fsync'ed: after a power cut the file is either the old
or the new one. tomli-w writes the file, so comments of a hand-written box.toml are not kept; a
header says so.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from firmware.config import CONFIG_NAME

HEADER = ("# E-signature Box configuration. Last written by the admin console, which keeps no comments;\n"
          "# every setting is described in README.md (\"Configuration\").\n\n")


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    write_atomic(path, new.encode())
    return old, new


def restore(state_dir: Path, text: str) -> None:
    write_atomic(state_dir / CONFIG_NAME, text.encode())
