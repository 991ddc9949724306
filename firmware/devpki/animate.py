"""The dev PKI's HTTP server in several processes: certomancer's Animator on one listening socket.

`certomancer animate` answers one request at a time (Werkzeug's development server, one thread),
and its TSA spends ~6 ms of CPU per timestamp: that caps everything timestamped at ~150/s, however
fast the box is (`make bench` measures the box's B-T against the TSA's own rate). Here the
Animator is built once (as `certomancer animate --no-web-ui` builds it), the socket is bound and
listening, and the process forks into ``PROCESSES`` copies that accept on it: the kernel hands
each connection to one that waits. Forking is safe: nothing has started a thread or loaded a
PKCS#11 module yet. A copy dies with the first (PR_SET_PDEATHSIG), and the first stops them and
waits for them when it is stopped, so that the port is free once it has exited.

    python -m firmware.devpki.animate CONFIG PORT PROCESSES
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from certomancer.integrations.animator import Animator, AnimatorArchStore
from certomancer.registry import CertomancerConfig
from werkzeug.serving import make_server

from ..children import dies_with_this_process

HOST = "127.0.0.1"  # like certomancer's: the dev PKI is for this machine only


def main(config: str, port: int, processes: int) -> None:
    app = Animator(AnimatorArchStore(CertomancerConfig.from_file(config).pki_archs), with_web_ui=False)
    listener = socket.create_server((HOST, port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    copies: list[int] = []
    arrange = dies_with_this_process()
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            arrange()
            copies = []
            break
        copies.append(pid)
    try:
        make_server(HOST, port, app, fd=listener.fileno()).serve_forever()
    finally:
        for pid in copies:
            os.kill(pid, signal.SIGTERM)
        for pid in copies:
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
