"""No-follow reads: what a hostile stick cannot subvert.

Every file the box writes for provisioning goes through firmware.durable (temporary file, fsync,
os.replace, fsync of the directory; new files in a staging directory; symlink switches).
Reads from a stick open each path component relative to its parent's descriptor with
O_NOFOLLOW, so a symlink on the stick is refused rather than followed.
"""

from __future__ import annotations

import os
import stat

_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir_nofollow(name: str, dir_fd: int | None = None) -> int:
    """A directory descriptor for ``name``; ELOOP/ENOTDIR if it is a symlink or not a directory."""
    return os.open(name, _NOFOLLOW_DIR, dir_fd=dir_fd)


def read_regular_nofollow(name: str, dir_fd: int, limit: int) -> bytes | None:
    """The bytes of regular file ``name`` under ``dir_fd``, or None if it holds more than ``limit``.

    Symlinks (ELOOP) and anything but a regular file raise OSError / ValueError. The size is
    checked while reading, not trusted from stat.
    """
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{name} is not a regular file")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                return None
    finally:
        os.close(fd)
