"""The state partition's room: what a full disk means for a request, and how close it is.

A box in a cupboard fills its disk slowly (the audit log only grows) or quickly (someone
floods it with refusals). A full disk must not look like a bug: a write that fails for lack of
room becomes `StorageFull`, which the API answers with 503, and the dashboard warns before it
happens. Reading the budget costs two stat calls, cheap enough for every refused request.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024


class StorageFull(Exception):
    """The state partition has no room for the record; nothing was signed or charged."""

    def __init__(self, message: str = "the box's disk is full: nothing was signed; "
                                      "an operator must free space on its state partition") -> None:
        super().__init__(message)


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the database's size limit) is full."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def full_error(exc: BaseException) -> BaseException:
    """``exc`` as a StorageFull (caused by it) if it says the disk is full, else ``exc`` itself."""
    if not is_full(exc):
        return exc
    error = StorageFull()
    error.__cause__ = exc
    return error


@dataclass(frozen=True)
class StorageState:
    db_bytes: int  # the database with its write-ahead log: the audit log, clients, sessions
    free_bytes: int  # free for the box on the state partition
    max_db_bytes: int
    min_free_bytes: int

    @property
    def over_budget(self) -> bool:
        return self.db_bytes > self.max_db_bytes

    @property
    def low_on_space(self) -> bool:
        return self.free_bytes < self.min_free_bytes


@dataclass(frozen=True)
class StorageBudget:
    """``[audit] max_db_mb`` and ``min_free_mb``. Past either, refusals without a valid key are
    only counted, never logged one by one, and the dashboard warns."""

    max_db_bytes: int = 2048 * MB
    min_free_bytes: int = 256 * MB

    def state(self, database: Path) -> StorageState:
        size = sum(_size(database.with_name(database.name + suffix)) for suffix in ("", "-wal"))
        fs = os.statvfs(database.parent)
        return StorageState(size, fs.f_bavail * fs.f_frsize, self.max_db_bytes, self.min_free_bytes)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
