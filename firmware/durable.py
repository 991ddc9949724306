"""Crash-safe file writes: after a power cut a name holds either the old or the new bytes.

A temporary file in the same directory, fsync, os.replace, then an fsync of the directory so
the rename itself is on disk. Every configuration or key file the box rewrites goes through here,
and so do the files of a new configuration generation and the symlinks that switch to it
(firmware/operations/generations.py).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file that must not exist yet (inside a staging directory), fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically (a new symlink renamed over the old name)."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def secret_key(path: Path) -> bytes:
    """A random 32-byte key kept in ``path`` (0600), made on first use: the HMAC keys of one-time and
    access codes. A box restored without it cannot check the old codes, which only expire.

    The key is written under a temporary name and linked into place, so that a worker process
    starting beside another never reads the file between its creation and its write."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        write_new(tmp, secrets.token_bytes(32), mode=0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:  # another worker process made it first
            pass
        finally:
            tmp.unlink()
        fsync_dir(path.parent)
    return path.read_bytes()
