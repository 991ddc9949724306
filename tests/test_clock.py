"""The box's clock against its TSA: a box whose clock is off refuses to sign rather than stamp a
wrong signing time, and says why.

The skewed party is a real TSA: the dev PKI's own `certomancer animate`, run under libfaketime
(Debian `faketime`) two hours in the future, so its genTime disagrees with the box's clock just as
a box without a real-time clock and without NTP would disagree with a correct TSA.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
import requests

from firmware.config import BoxConfig
from firmware.devpki import DevPki
from firmware.devpki.pki import ARCH, ROOT_CRL_REPO
from firmware.store.clients import ClientRegistry
from firmware.store.db import Database

from .support import Api, BoxProcess, WorkerConnection, connections_to_each_worker, free_port
from .test_provisioning import write_box_toml


@pytest.fixture
def future_tsa(dev_pki: DevPki, tmp_path: Path) -> Iterator[str]:
    """The dev PKI served by a second certomancer whose clock runs two hours ahead."""
    port = free_port()
    faketime = shutil.which("faketime") or "/usr/bin/faketime"
    certomancer = str(Path(sys.executable).with_name("certomancer"))
    log = (tmp_path / "future-tsa.log").open("wb")
    process = subprocess.Popen(
        [faketime, "-f", "+2h", certomancer, "--config", str(dev_pki.config_path),
         "animate", "--port", str(port), "--no-web-ui"],
        stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # faketime forks certomancer: the whole group is stopped below
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "future-tsa.log").read_text()
            try:
                if requests.get(f"{base}/{ARCH}/crls/{ROOT_CRL_REPO}/latest.crl", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the future TSA did not start"
            time.sleep(0.1)
        yield dev_pki.tsa_url().replace(dev_pki.tsa_url().split("/")[2], f"127.0.0.1:{port}")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        log.close()


def _sign(api: Api, level: str) -> requests.Response:
    digest = base64.b64encode(hashlib.sha256(level.encode()).digest()).decode()
    return api.post("/v1/signatures", json={"hash_algorithm": "sha256", "hash": digest, "level": level})


def _sign_on(conn: WorkerConnection, key: str, level: str) -> tuple[int, dict]:
    digest = base64.b64encode(hashlib.sha256(level.encode()).digest()).decode()
    return conn.call("POST", "/v1/signatures", {"hash_algorithm": "sha256", "hash": digest, "level": level},
                     {"Authorization": f"Bearer {key}"})


def test_a_box_whose_clock_disagrees_with_its_tsa_refuses_to_sign(
    tmp_path: Path, box_config: BoxConfig, pki_server, future_tsa: str,
):
    """What one worker learnt from the TSA, every worker knows: the other refuses at once too."""
    state_dir = tmp_path / "skewed"
    state_dir.mkdir()
    write_box_toml(state_dir, box_config, api={"workers": 2},
                   signing={"tsa_urls": [future_tsa], "max_clock_skew_seconds": 60})
    _, key = ClientRegistry(Database(state_dir / "box.db")).add("skewed")
    box = BoxProcess(state_dir).start()
    try:
        held = connections_to_each_worker(box, 1)
        first, second = (conns[0] for conns in held.values())
        status, body = _sign_on(first, key, "B-T")
        assert status == 503, body
        assert body["error"] == "clock_skewed" and "TSA" in body["message"] and "7200" in body["message"].replace(",", "")
        for conn in (first, second):  # no TSA involved, but the signing time would be just as wrong
            status, body = _sign_on(conn, key, "B-B")
            assert status == 503 and body["error"] == "clock_skewed", (conn.pid, body)
            status, health = conn.call("GET", "/v1/health")
            assert status == 503 and health["status"] == "clock_skewed", (conn.pid, health)
            clock = health["clock"]
            assert clock["ok"] is False and -7300 < clock["skew_seconds"] < -7100 and clock["max_skew_seconds"] == 60
        conn = Database(state_dir / "box.db").connect()
        assert conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0] == 0
    finally:
        box.stop()


def test_a_box_in_step_with_its_tsa_signs(box_config: BoxConfig, api: Api):
    assert _sign(api, "B-T").status_code == 201
    assert _sign(api, "B-B").status_code == 201
    health = api.get("/v1/health").json()
    assert health["status"] == "ok" and health["clock"]["ok"] is True and abs(health["clock"]["skew_seconds"]) < 5
    assert health["clock"]["synchronised"] in (True, False, None)  # what the kernel says; informational


def test_a_clock_set_right_again_signs_again(dev_pki: DevPki, pki_server):
    """The refusal lasts only while the clock is off: a fresh reading from the TSA lifts it."""
    from datetime import datetime, timedelta

    from firmware.signing.clock import ClockSkewed, ClockWatch
    from firmware.signing.timestamps import FallbackTimeStamper

    clock = ClockWatch(max_skew_s=60, reprobe_after_s=0)
    now = time.time()
    with pytest.raises(ClockSkewed, match="7200 s behind"):
        clock.observe(datetime.now(UTC) + timedelta(hours=2), now, now, "a TSA")
    with pytest.raises(ClockSkewed):
        clock.check()  # no probe to ask: the last reading stands
    assert clock.status()["ok"] is False
    clock.probe = FallbackTimeStamper([dev_pki.tsa_url()], clock=clock).probe
    clock.check()  # re-measured against the real dev TSA: in step again
    status = clock.status()
    assert status["ok"] is True and abs(status["skew_seconds"]) < 5
