"""A token that goes away and comes back (a USB token re-plugged, a YubiHSM connector restarted).

The box must answer 503 quickly while the token is gone, say so on /v1/health, and sign again by
itself within seconds of the token's return, without a restart. SoftHSM2 keeps a token in a
directory, so moving that directory away and back is a real pull and re-plug. These tests use a
box of their own, so the shared box of the other tests keeps its token.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from firmware.config import BoxConfig
from firmware.store.clients import ClientRegistry
from firmware.store.db import Database
from hsm.token import RECONNECT_INTERVAL_S

from .support import Api, BoxProcess, free_port

# Bounds, not expectations: a gone token must fail fast and a returned one must sign again soon.
FAIL_FAST_S = 3.0
RECOVERY_BOUND_S = 5.0
REQUEST_TIMEOUT_S = 10.0
OUTAGE_S = 2.5  # how long the token-level drill keeps eight threads signing on a gone token


@dataclass(frozen=True)
class OwnBox:
    process: BoxProcess
    config: BoxConfig
    api_key: str

    @property
    def token_dir(self) -> Path:
        return softhsm_token_dir(Path(self.config.token.environment["SOFTHSM2_CONF"]))


def softhsm_token_dir(conf: Path) -> Path:
    """Where SoftHSM2 keeps its tokens, read from the conf file the module loads."""
    found = re.search(r"^directories\.tokendir\s*=\s*(.+)$", conf.read_text(), re.MULTILINE)
    assert found, f"no tokendir in {conf}"
    return Path(found.group(1).strip())


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


def _health(api: Api) -> requests.Response:
    """/v1/health on the signing requests' own connection: each worker process knows its own token
    connection, and this is the worker that saw the token go."""
    return api.session.get(f"{api.base_url}/v1/health", timeout=REQUEST_TIMEOUT_S)


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
        health = _health(api)
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

    health = _health(api)
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["token"]["state"] == "ok"


class _AttemptCounter(logging.Handler):
    """Counts the token's reconnection attempts, as the log reports them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.attempts = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.attempts += record.getMessage().startswith("reconnecting to token")


def _hammer(sign, threads: int, seconds: float) -> list[tuple[float, str]]:
    """``threads`` threads call ``sign`` for ``seconds`` (at most 500 calls each): (duration, outcome)."""
    outcomes: list[tuple[float, str]] = []
    deadline = time.monotonic() + seconds

    def work() -> None:
        for _ in range(500):
            if time.monotonic() > deadline:
                return
            started = time.monotonic()
            try:
                sign()
                outcome = "signed"
            except Exception as exc:  # every outcome is recorded and asserted by the caller
                outcome = type(exc).__name__
            outcomes.append((time.monotonic() - started, outcome))
            time.sleep(0.01)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outcomes


def token_drill(state_dir: str) -> None:
    """The outage on ``hsm.Token`` itself, with two Tokens on one module as the console has.

    Runs in a child process (SoftHSM2 reads its conf once per process) and prints its figures as
    JSON for the test below to judge.
    """
    from firmware.devbox import _init_softhsm
    from hsm import KeyAlgorithm, SignatureScheme, Token, TokenUnavailable

    config = dataclasses.replace(_init_softhsm(Path(state_dir)), sessions=2)
    counter = _AttemptCounter()
    logging.getLogger("hsm.token").addHandler(counter)
    logging.getLogger("hsm.token").setLevel(logging.INFO)
    first, second = Token(config), Token(config)
    first.generate_key("drill", KeyAlgorithm.EC_P256)
    digest = hashlib.sha256(b"drill").digest()

    def sign(token: Token) -> bytes:
        return token.sign_digest("drill", digest, "sha256", SignatureScheme.ECDSA)

    sign(first), sign(second)
    with token_pulled(softhsm_token_dir(Path(os.environ["SOFTHSM2_CONF"]))):
        outcomes = _hammer(lambda: sign(first), threads=8, seconds=OUTAGE_S)
        status = first.status()
    attempts_while_gone = counter.attempts
    returned = time.monotonic()
    while True:
        try:
            sign(first)
            break
        except TokenUnavailable:
            if time.monotonic() - returned > RECOVERY_BOUND_S:
                raise
            time.sleep(0.01)
    recovery_s = time.monotonic() - returned
    attempts_at_recovery = counter.attempts
    after = _hammer(lambda: (sign(first), sign(second)), threads=8, seconds=0.5)
    print(json.dumps({
        "outcomes_while_gone": sorted({outcome for _, outcome in outcomes}),
        "calls_while_gone": len(outcomes),
        "slowest_call_while_gone_s": max(duration for duration, _ in outcomes),
        "attempts_while_gone": attempts_while_gone,
        "status_while_gone": dataclasses.asdict(status),
        "recovery_s": recovery_s,
        "outcomes_after": sorted({outcome for _, outcome in after}),
        "slowest_call_after_s": max(duration for duration, _ in after),
        "attempts_after_recovery": counter.attempts - attempts_at_recovery,
        "sessions": [first.info()["sessions"], second.info()["sessions"]],
    }))


def test_token_fails_fast_while_gone_and_reconnects_by_itself(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.test_token_recovery import token_drill; token_drill(sys.argv[1])",
         str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\n{figures}")
    assert figures["outcomes_while_gone"] == ["TokenUnavailable"]
    assert figures["slowest_call_while_gone_s"] < 1.0
    # One attempt when the token is found gone, then at most one per RECONNECT_INTERVAL_S.
    assert 1 <= figures["attempts_while_gone"] <= OUTAGE_S / RECONNECT_INTERVAL_S + 2
    assert figures["status_while_gone"]["state"] == "unavailable" and figures["status_while_gone"]["reason"]
    assert figures["recovery_s"] < RECONNECT_INTERVAL_S + 1.0
    # Both tokens sign again on full pools; the second reconnects once (the first's reload closed
    # its sessions) without reloading the module under the first again.
    assert figures["outcomes_after"] == ["signed"] and figures["slowest_call_after_s"] < 1.0
    assert figures["attempts_after_recovery"] == 1
    assert figures["sessions"] == [2, 2]
