"""Child processes that end with the box.

`esignbox serve` starts servers of its own (the dev PKI, nginx). On SIGTERM it stops them, but a
`kill -9` or a crash runs no handler: a child left running keeps its port, and the next start
fails until someone kills it by hand. The kernel can signal a child when its parent dies
(``PR_SET_PDEATHSIG``); this module arranges that.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable

__all__ = ["dies_with_this_process", "end"]

_PR_SET_PDEATHSIG = 1


def dies_with_this_process() -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when this process dies.

    Strictly, when the thread that started it ends: start children from the main thread. A
    parent that died between fork and prctl is caught by comparing the child's parent with it.
    """
    parent = os.getpid()

    def arrange() -> None:  # runs in the child, between fork and exec
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


def end(process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """Stop a child server: SIGTERM, and SIGKILL if it has not exited within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
