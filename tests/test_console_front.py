"""The console's nginx front on its own: it comes back by itself when killed, and says so."""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
from pathlib import Path

import requests
import urllib3

from webui import tls
from webui.nginx import NginxFront

from .support import free_port


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"console")

    def log_message(self, *args) -> None:
        pass


def _get(port: int) -> int | None:
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    try:
        return requests.get(f"https://127.0.0.1:{port}/", verify=False, timeout=2).status_code
    except requests.RequestException:
        return None


def test_nginx_killed_outright_is_started_again_and_reported(tmp_path: Path, caplog):
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    cert = tls.ensure_server_cert(tmp_path / "tls", ["localhost"], ["127.0.0.1"])
    port = free_port()
    front = NginxFront(tmp_path / "nginx", ["127.0.0.1"], port, upstream.server_address[1],
                       cert.cert_file, cert.key_file).start()
    try:
        assert _get(port) == 200
        assert front.status() == {"running": True, "restarts": 0, "last_failure": None}
        os.kill(front._process.pid, signal.SIGKILL)  # the master only: its workers are orphaned
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (front.restarts and _get(port) == 200):
            time.sleep(0.2)
        assert _get(port) == 200, "the console did not come back"
        status = front.status()
        assert status["running"] and status["restarts"] == 1 and "SIGKILL" in status["last_failure"]
        assert any("nginx exited (killed by SIGKILL)" in r.getMessage() for r in caplog.records)
    finally:
        front.stop()
        upstream.shutdown()
    time.sleep(0.3)
    assert _get(port) is None, "nginx outlived stop()"
    assert front.restarts == 1, "stop() must not count as a failure"
