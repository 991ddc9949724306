"""Serve the dev PKI's TSA, OCSP responder, CRLs and certificates over HTTP.

Runs certomancer's Animator (firmware/devpki/animate.py) as a subprocess rather
than in-process: it is a blocking Werkzeug development server, and a separate
process is what the box meets in practice (a PKI it reaches over the network).
The subprocess dies with the process that started it, even on ``kill -9``, so
that its port is free for the next start. One process answers one request at a
time, as `certomancer animate` does; ``processes`` more answer that many at once.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, NoReturn

import requests

from ..children import dies_with_this_process, end
from .pki import ARCH, ROOT_CRL_REPO, DevPki

__all__ = ["PkiServer", "PkiServerError"]

LOG_FILE = "animator.log"
_LOG_TAIL_BYTES = 4000


class PkiServerError(RuntimeError):
    """The certomancer Animator did not start (its log is in the message)."""


class PkiServer:
    """certomancer's Animator for ``pki`` on 127.0.0.1:``port``, in ``processes`` processes.

    Certomancer always binds 127.0.0.1. The URLs inside the certificates come
    from the PKI's url_prefix, so it must name this port (or a proxy to it).
    Requests are logged to ``animator.log`` in the PKI directory.
    """

    def __init__(self, pki: DevPki, port: int, startup_timeout: float = 60.0, processes: int = 1) -> None:
        self.pki = pki
        self.port = port
        self.startup_timeout = startup_timeout
        self.processes = processes
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The Animator's (first) process while it runs; the others are its children (`make bench`
        reads the TSA's CPU time from them)."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the Animator and return once it serves the root CRL."""
        if self._process is not None:
            raise PkiServerError("PKI server already started")
        self._check_port_free()
        log_path = self.pki.directory / LOG_FILE
        self._log = log_path.open("wb")
        command = [sys.executable, "-m", "firmware.devpki.animate", str(self.pki.config_path), str(self.port),
                   str(self.processes)]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=dies_with_this_process(),
        )
        self._wait_until_serving(log_path)

    def stop(self) -> None:
        """Terminate the Animator and wait for it; safe to call twice."""
        if self._process is not None:
            end(self._process)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> PkiServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_port_free(self) -> None:
        """Fail early: a server already on the port would answer our readiness probe."""
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError as e:
                raise PkiServerError(f"port {self.port} on 127.0.0.1 is in use: {e}") from e

    def _wait_until_serving(self, log_path: Path) -> None:
        assert self._process is not None
        probe = f"{self.base_url}/{ARCH}/crls/{ROOT_CRL_REPO}/latest.crl"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                self._fail(f"exited with status {self._process.returncode}", log_path)
            try:
                # certomancer signs each CRL on request: on a loaded machine that takes seconds
                if requests.get(probe, timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self._fail(f"did not answer {probe} within {self.startup_timeout} s", log_path)
            time.sleep(0.1)

    def _fail(self, reason: str, log_path: Path) -> NoReturn:
        self.stop()
        tail = log_path.read_bytes()[-_LOG_TAIL_BYTES:].decode(errors="replace")
        raise PkiServerError(
            f"the dev PKI's Animator on port {self.port} {reason}; its output:\n{tail}"
        )
