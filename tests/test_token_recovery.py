"""A token that goes away and comes back (a USB token re-plugged, a YubiHSM connector restarted).

The box must answer 503 quickly while the token is gone, say so on /v1/health, and sign again by
itself within seconds of the token's return, without a restart. SoftHSM2 keeps a token in a
directory, so moving that directory away and back is a real pull and re-plug. These tests use a
box of their own, so the shared box of the other tests keeps its token.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests

from firmware.config import BoxConfig
from firmware.store.clients import ClientRegistry
from firmware.store.db import Database

from .support import Api, BoxProcess, free_port

# Bounds, not expectations: a gone token must fail fast and a returned one must sign again soon.
FAIL_FAST_S = 3.0
RECOVERY_BOUND_S = 5.0
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class OwnBox:
    process: BoxProcess
    config: BoxConfig
    api_key: str

    @property
    def token_dir(self) -> Path:
        """Where SoftHSM2 keeps this box's token, read from the conf file the box loads."""
        conf = Path(self.config.token.environment["SOFTHSM2_CONF"]).read_text()
        return Path(re.search(r"^directories\.tokendir\s*=\s*(.+)$", conf, re.MULTILINE).group(1).strip())


def _init_box(state_dir: Path) -> BoxConfig:
    """init_dev in a child process: it loads SoftHSM2 with this box's conf, which must not
    become the conf of the test process (the module reads it once per process)."""
    script = (
        "import sys; from pathlib import Path; from firmware.devbox import init_dev; "
        "from hsm import KeyAlgorithm; "
        "init_dev(Path(sys.argv[1]), pki_port=int(sys.argv[2]), api_port=int(sys.argv[3]), "
        "key_algorithm=KeyAlgorithm.EC_P256)"
    )
    subprocess.run([sys.executable, "-c", script, str(state_dir), str(free_port()), str(free_port())],
                   check=True, capture_output=True, timeout=120)
    return BoxConfig.load(state_dir)


@pytest.fixture(scope="module")
def own_box(tmp_path_factory) -> Iterator[OwnBox]:
    config = _init_box(tmp_path_factory.mktemp("token-outage-box"))
    _, api_key = ClientRegistry(Database(config.database)).add("token-outage")
    process = BoxProcess(config.state_dir).start()
    yield OwnBox(process, config, api_key)
    process.stop()


@contextlib.contextmanager
def token_pulled(token_dir: Path) -> Iterator[None]:
    """The token directory is gone for the block, and back (the same token) after it."""
    away = token_dir.with_name(token_dir.name + "-pulled")
    token_dir.rename(away)
    try:
        yield
    finally:
        away.rename(token_dir)


def _sign(api: Api) -> requests.Response:
    body = {"hash_algorithm": "sha256", "hash": base64.b64encode(hashlib.sha256(b"outage").digest()).decode(),
            "level": "B-B"}
    return api.session.post(f"{api.base_url}/v1/signatures", json=body, timeout=REQUEST_TIMEOUT_S)


def _health(box: OwnBox) -> requests.Response:
    return requests.get(f"{box.process.url}/v1/health", timeout=REQUEST_TIMEOUT_S)


def test_signing_resumes_by_itself_when_the_token_comes_back(own_box: OwnBox):
    api = Api(own_box.process.url, own_box.api_key)
    pin = own_box.config.token.read_pin()
    for _ in range(4):  # every pooled session has signed and holds the key's handle
        assert _sign(api).status_code == 201

    with token_pulled(own_box.token_dir):
        for _ in range(3):
            started = time.monotonic()
            response = _sign(api)
            assert (response.status_code, response.json()["error"]) == (503, "token_unavailable"), response.text
            assert time.monotonic() - started < FAIL_FAST_S
        health = _health(own_box)
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "token_unavailable" and body["token_present"] is False
        assert body["token"]["state"] == "unavailable" and body["token"]["reason"]
        assert pin not in health.text

    returned = time.monotonic()
    while (response := _sign(api)).status_code != 201 and time.monotonic() - returned < RECOVERY_BOUND_S:
        assert response.status_code == 503
        time.sleep(0.05)
    recovery_s = time.monotonic() - returned
    assert response.status_code == 201, response.text
    print(f"\nfirst signature {recovery_s:.3f} s after the token came back")

    health = _health(own_box)
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["token"]["state"] == "ok"
