"""The box's API with the signature ledger replaced by a no-op, for `make bench` only.

It exists to measure what metering and the audit log cost per request (the issue's "on vs off"
figure); the firmware itself has no way to switch them off. It serves the way `esignbox serve`
does: this process binds the listener (firmware.serving.bind) and runs ``[api] workers`` fresh
copies of itself that serve it (firmware.serving.serve) — only without the supervisor's restarts
and the parent's own jobs, which a bench run of seconds does not need.

    serve_unmetered.py STATE_DIR PORT            the parent
    serve_unmetered.py STATE_DIR PORT FD [FD…]   one worker, on the inherited listening sockets
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from firmware.children import dies_with_this_process, end
from firmware.config import BoxConfig
from firmware.operations.live import SigningService
from firmware.serving import bind, serve
from firmware.signing import HashSigningService

HOST = "127.0.0.1"


class _NoLedger:
    def admit(self, client_id: str, count: int) -> None:
        return None

    def record(self, records: object) -> None:
        return None


def worker(state_dir: Path, port: int, fds: list[int]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    service = SigningService.open(state_dir, (HOST, port))
    box = service.box
    box.hash_signing = HashSigningService(box.signer, box.timestamper, box.revocation, _NoLedger())  # type: ignore[arg-type]
    service.install(box)  # the app is rebuilt around the unmetered service
    serve(service, box.config.api, [socket.socket(fileno=fd) for fd in fds])


def parent(state_dir: Path, port: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sockets = bind(HOST, port)
    fds = [str(sock.fileno()) for sock in sockets]
    workers = [
        subprocess.Popen([sys.executable, __file__, str(state_dir), str(port), *fds], pass_fds=[int(fd) for fd in fds],
                         stdin=subprocess.DEVNULL, preexec_fn=dies_with_this_process())
        for _ in range(BoxConfig.load(state_dir).api.workers)
    ]
    try:
        for process in workers:
            process.wait()
    finally:
        for process in workers:
            end(process)


if __name__ == "__main__":
    state, listen_port, *listen_fds = sys.argv[1:]
    if listen_fds:
        worker(Path(state), int(listen_port), [int(fd) for fd in listen_fds])
    else:
        parent(Path(state), int(listen_port))
