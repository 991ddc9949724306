"""Which address the envelope trail records behind a reverse proxy ([api] trusted_proxies).

The rule on its own (firmware/api/client_ip.py), then through real HTTP to `esignbox serve`: the
business system's API calls and a party's steps on the signing page carry an X-Forwarded-For;
what the box recorded is read from its database's trail.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from firmware.api.client_ip import client_ip
from firmware.config import BoxConfig, ConfigError
from firmware.store.db import open_connection

from .pdfs import make_pdf
from .support import BoxProcess, box_toml_with

PROXIES = [ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(("peer", "header", "expected"), [
    ("127.0.0.1", None, "127.0.0.1"),  # no header: the peer
    ("192.0.2.50", "203.0.113.7", "192.0.2.50"),  # not a trusted proxy: its header is not believed
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # what the client wrote is left of it
    ("127.0.0.1", "198.51.100.1, 203.0.113.7, 10.1.2.3", "203.0.113.7"),  # a second proxy of ours
    ("127.0.0.1", "rubbish, 203.0.113.7", "203.0.113.7"),  # the client's own rubbish is never reached
    ("127.0.0.1", "203.0.113.7, rubbish", "127.0.0.1"),  # the chain cannot be followed
    ("127.0.0.1", "203.0.113.7:5000", "127.0.0.1"),
    ("127.0.0.1", "", "127.0.0.1"),
    ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # only proxies of ours: the first made the request
    ("::ffff:127.0.0.1", "2001:db8::5", "2001:db8::5"),
])
def test_the_client_is_the_right_most_address_no_trusted_proxy_wrote(peer, header, expected):
    assert client_ip(peer, header, PROXIES) == expected


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path):
    base = '[token]\nmodule = "m.so"\nlabel = "t"\n[api]\n'
    config = BoxConfig.from_text(tmp_path, base + 'trusted_proxies = ["192.0.2.10", "10.0.0.0/8", "fd00::/8"]\n')
    assert [str(n) for n in config.api.trusted_networks] == ["192.0.2.10/32", "10.0.0.0/8", "fd00::/8"]
    assert BoxConfig.from_text(tmp_path, base).api.trusted_networks == ()
    with pytest.raises(ConfigError, match=r"line 5: \[api\] trusted_proxies: .*'proxy.lan'"):
        BoxConfig.from_text(tmp_path, base + 'trusted_proxies = ["proxy.lan"]\n')


# -- through `esignbox serve` --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def business_key(clients) -> str:
    return clients.add("client-ip", scopes=("contracts",))[1]


@pytest.fixture
def trusting_box(box_config: BoxConfig, pki_server, session_box_stopped) -> Iterator[BoxProcess]:
    """The session's box started with [api] trusted_proxies = ["127.0.0.1"] (the test is the proxy).

    box.toml keeps the setting while the box runs: its workers serve box.toml as it is now."""
    path = box_config.state_dir / "box.toml"
    original = path.read_text()
    path.write_text(box_toml_with(original, {"api": {"trusted_proxies": ["127.0.0.1"]}}))
    try:
        process = BoxProcess(box_config.state_dir).start()
        yield process
        process.stop()
    finally:
        path.write_text(original)


def _walk(box: BoxProcess, key: str, forwarded_for: str) -> str:
    """An envelope created, and its party validated on the signing page, every request carrying
    ``forwarded_for``; returns the envelope's id."""
    session = requests.Session()
    session.trust_env = False
    session.headers["X-Forwarded-For"] = forwarded_for
    envelope = {"title": "Behind the proxy", "parties": [{
        "name": "Alice Example", "email": "alice@example.com", "method": "access_code", "access_code": "A-7731",
        "field": {"name": "Alice", "page": 1, "box": [50, 60, 250, 130]}}]}
    created = session.post(box.url + "/v1/contracts", headers={"Authorization": f"Bearer {key}"}, timeout=60, files={
        "envelope": (None, json.dumps(envelope), "application/json"),
        "document": ("contract.pdf", make_pdf(pages=1), "application/pdf")})
    assert created.status_code == 201, created.text
    page = created.json()["parties"][0]["link"]  # to this box: BoxProcess wrote its port into the links
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', session.get(page, timeout=10).text)
    assert csrf is not None
    verified = session.post(page + "/verify", data={"csrf": csrf[1], "code": "A-7731"}, allow_redirects=False,
                            timeout=30)
    assert verified.status_code == 303, verified.text
    return created.json()["id"]


def _trail(box_config: BoxConfig, contract_id: str) -> dict[str, Any]:
    conn = open_connection(box_config.database)
    try:
        rows = conn.execute("SELECT action, ip FROM contract_events WHERE contract_id = ?", (contract_id,)).fetchall()
    finally:
        conn.close()
    return {action: ip for action, ip in rows}


def test_a_forwarded_for_from_a_peer_not_trusted_is_ignored(box, box_config, business_key):
    contract_id = _walk(box, business_key, "203.0.113.7")
    trail = _trail(box_config, contract_id)
    assert trail["created"] == "127.0.0.1" and trail["validated"] == "127.0.0.1", trail


def test_behind_a_trusted_proxy_the_trail_records_the_forwarded_client(trusting_box, box_config, business_key):
    contract_id = _walk(trusting_box, business_key, "198.51.100.1, 203.0.113.7")
    trail = _trail(box_config, contract_id)
    assert trail["created"] == "203.0.113.7" and trail["validated"] == "203.0.113.7", trail



def test_a_refused_caller_is_audited_by_its_own_address(trusting_box, box_config):
    """Refusals of callers without a key are logged once per peer and window: behind the proxy
    every caller would be that one peer, and the first of them would hide all others."""
    refused = requests.post(trusting_box.url + "/v1/signatures", timeout=30,
                            headers={"Authorization": "Bearer not-a-key", "X-Forwarded-For": "203.0.113.9"})
    assert refused.status_code == 401, refused.text
    conn = open_connection(box_config.database)
    try:
        rows = conn.execute("SELECT details FROM audit_log WHERE action = 'refusal' ORDER BY seq DESC LIMIT 1")
        latest = json.loads(rows.fetchone()[0])
    finally:
        conn.close()
    assert (latest["path"], latest["peer"]) == ("/v1/signatures", "203.0.113.9"), latest
