"""Outbound requests (TSA, OCSP, CRL) go through the organisation's HTTP proxy when one is set.

A real proxy (Debian's tinyproxy) on 127.0.0.1 and a box whose box.toml names it: the
timestamps and revocation data of a B-LT signature pass through it, and with the proxy gone the
box cannot reach the TSA (so the path really is the proxy, not a direct connection).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config import BoxConfig
from firmware.store.clients import ClientRegistry
from firmware.store.db import Database

from .support import Api, BoxProcess, free_port
from .test_provisioning import write_box_toml


class Tinyproxy:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.log = directory / "tinyproxy.log"
        self.conf = directory / "tinyproxy.conf"
        self.conf.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 50\n"
            f"LogFile \"{self.log}\"\nLogLevel Connect\nPidFile \"{directory / 'tinyproxy.pid'}\"\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> Tinyproxy:
        binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
        self.process = subprocess.Popen([binary, "-d", "-c", str(self.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        assert self.process.poll() is None, self.log.read_text() if self.log.exists() else "tinyproxy exited"
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def requests_to(self, port: int) -> list[str]:
        text = self.log.read_text() if self.log.exists() else ""
        return [line for line in text.splitlines() if f"127.0.0.1:{port}" in line and "Request" in line]


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    running = Tinyproxy(tmp_path).start()
    yield running
    running.stop()


def _hash() -> str:
    return base64.b64encode(hashlib.sha256(b"through the proxy").digest()).decode()


def test_timestamps_and_revocation_go_through_the_configured_proxy(
    tmp_path: Path, box_config: BoxConfig, pki_server, proxy: Tinyproxy,
):
    state_dir = tmp_path / "proxied"
    state_dir.mkdir()
    write_box_toml(state_dir, box_config, outbound={"proxy": f"http://127.0.0.1:{proxy.port}"})
    _, key = ClientRegistry(Database(state_dir / "box.db")).add("proxied")
    box = BoxProcess(state_dir).start()
    try:
        api = Api(box.url, key)
        for level in ("B-T", "B-LT"):
            made = api.post("/v1/signatures", json={"hash_algorithm": "sha256", "hash": _hash(), "level": level})
            assert made.status_code == 201, made.text
        through = proxy.requests_to(box_config.pki_port)
        assert any("/tsa" in line for line in through), proxy.log.read_text()
        assert any("/ocsp" in line or ".crl" in line for line in through), proxy.log.read_text()
        proxy.stop()
        refused = api.post("/v1/signatures", json={"hash_algorithm": "sha256", "hash": _hash(), "level": "B-T"})
        assert refused.status_code == 503 and refused.json()["error"] == "timestamp_unavailable"
    finally:
        box.stop()


def test_a_proxy_setting_that_is_not_an_http_url_is_refused_at_start(tmp_path: Path, box_config: BoxConfig):
    state_dir = tmp_path / "bad"
    state_dir.mkdir()
    write_box_toml(state_dir, box_config, outbound={"proxy": "socks5://127.0.0.1:1080"})
    with pytest.raises(RuntimeError, match=r"\[outbound\] proxy"):
        BoxProcess(state_dir).start()
