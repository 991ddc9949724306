"""One serving box per state directory, and a clear word when a second one is started.

`esignbox serve` holds an exclusive lock on ``<state>/serve.lock`` for as long as it runs; the
file names its pid. The kernel drops the lock when the process ends however it ends (kill -9
included), so a stale file never blocks a start, and a second `make run` can say which process
is already serving instead of failing on the first port it finds taken.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["AlreadyRunning", "hold_state_dir"]

LOCK_NAME = "serve.lock"


class AlreadyRunning(RuntimeError):
    """Another `esignbox serve` runs on this state directory."""


@contextmanager
def hold_state_dir(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise AlreadyRunning(
                f"the box in {state_dir} is already running (pid {holder}); stop it first"
                f" (Ctrl-C in its terminal, or kill {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
