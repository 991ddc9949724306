"""The signing API's worker processes and the parent that keeps them running.

One Python process signs far below the token's rate (its GIL, not the token, is the ceiling),
so `esignbox serve` binds the API's listening sockets once and runs ``[api] workers`` processes
that all accept on them (firmware/serving.py); the kernel hands each connection to one of them.

Workers are fresh interpreters (``python -m firmware … serve-worker --listen-fd N``), not forks:
the parent has threads (console, senders, sweeps) and an initialised PKCS#11 module, and a fork
taken while another thread holds a lock, or after ``C_Initialize``, inherits state the child
cannot trust. A fresh process loads the module, logs in and builds its own session pool.

The parent (`Supervisor.run`, on its main thread):

- restarts a worker that dies, logging how it ended; a worker that dies within ``STEADY_S`` of
  its start is restarted after a delay that doubles each time, up to ``MAX_BACKOFF_S``, so a
  crash loop does not spin. Meanwhile connections wait in the listening socket's backlog;
- on SIGTERM/SIGINT (the caller turns them into an exception) stops every worker: SIGTERM,
  then SIGKILL for those still running after ``STOP_TIMEOUT_S``;
- starts each worker with ``PR_SET_PDEATHSIG`` (firmware/children.py), so a worker never
  outlives a parent killed with SIGKILL. That signal follows the thread that started the child,
  which is why only the main thread starts workers.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .children import dies_with_this_process

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

STEADY_S = 10.0  # a worker that ran this long before it died was not crash-looping
MAX_BACKOFF_S = 30.0
STOP_TIMEOUT_S = 10.0  # requests in flight get this long to finish when the box stops
_POLL_S = 0.2


@dataclass
class _Slot:
    """One of the N places a worker fills; it keeps its number across restarts (for the log)."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = 0.0
    restart_at: float = 0.0


class Supervisor:
    def __init__(self, state_dir: Path, sockets: list[socket.socket], listener: tuple[str, int], count: int) -> None:
        """``count`` workers for the box in ``state_dir``, serving ``sockets`` (passed as open
        descriptors), which were bound for ``listener`` (host, port)."""
        self._fds = tuple(sock.fileno() for sock in sockets)
        host, port = listener
        self._command = [sys.executable, "-m", "firmware", "--state-dir", str(state_dir), "serve-worker",
                         *(arg for fd in self._fds for arg in ("--listen-fd", str(fd))),
                         "--host", host, "--port", str(port)]
        self._slots = [_Slot(n) for n in range(1, count + 1)]
        self._stopped = threading.Event()

    def run(self) -> None:
        """Start the workers and keep them running until `stop` or an exception (a signal's)."""
        assert threading.current_thread() is threading.main_thread(), "PR_SET_PDEATHSIG follows the starting thread"
        try:
            for slot in self._slots:
                self._start(slot)
            while not self._stopped.wait(_POLL_S):
                for slot in self._slots:
                    self._tend(slot)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop every worker: SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Idempotent."""
        self._stopped.set()
        running = [slot.process for slot in self._slots if slot.process is not None and slot.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop within %g s: killed", process.pid, STOP_TIMEOUT_S)
                process.kill()
                process.wait()

    def _start(self, slot: _Slot) -> None:
        slot.process = subprocess.Popen(self._command, pass_fds=self._fds, stdin=subprocess.DEVNULL,
                                        preexec_fn=dies_with_this_process())
        slot.started_at = time.monotonic()
        log.info("worker %d started (pid %d)", slot.number, slot.process.pid)

    def _tend(self, slot: _Slot) -> None:
        process = slot.process
        if process is not None:
            code = process.poll()
            if code is None:
                return
            slot.process = None
            lived = time.monotonic() - slot.started_at
            slot.backoff_s = 0.0 if lived >= STEADY_S else min(MAX_BACKOFF_S, max(1.0, 2 * slot.backoff_s))
            slot.restart_at = time.monotonic() + slot.backoff_s
            log.error("worker %d (pid %d) %s after %.1f s; restarting it%s", slot.number, process.pid,
                      _how_it_ended(code), lived, f" in {slot.backoff_s:g} s" if slot.backoff_s else "")
        if time.monotonic() >= slot.restart_at:
            self._start(slot)


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
