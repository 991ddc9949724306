"""Unit tests of the admin console's parts: LAN decisions with simulated peers and interfaces,
the middleware on a Falcon test client, accounts, lockouts, sessions, box.toml writing, TLS
material, nginx configuration, charts and probes. No token, browser or server is needed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import stat
from pathlib import Path

import falcon.testing
import pytest

from firmware.config import BoxConfig
from firmware.operations.accounts import AccountError, Accounts, set_setup_code
from firmware.operations.reports import AUDIT_PAGE_SIZE, AuditQuery, UsageRow, audit_actions, search_audit
from firmware.store.db import Database
from webui import tls
from webui.app import authority, create_app
from webui.charts import usage_chart
from webui.console import Console
from webui.lan import InterfaceAddress, LanPolicy, allowed_networks, listen_addresses, parse_peer
from webui.nginx import render_config
from webui.probes import Prober
from webui.sessions import COOKIE, SessionStore

INTERFACES = [
    InterfaceAddress("lo", ipaddress.ip_address("127.0.0.1"), ipaddress.ip_network("127.0.0.0/8")),
    InterfaceAddress("eth0", ipaddress.ip_address("192.168.1.10"), ipaddress.ip_network("192.168.1.0/24")),
    InterfaceAddress("eth0", ipaddress.ip_address("fd00::10"), ipaddress.ip_network("fd00::/64")),
    InterfaceAddress("eth0", ipaddress.ip_address("fe80::1"), ipaddress.ip_network("fe80::/64")),
    InterfaceAddress("wan0", ipaddress.ip_address("81.82.83.84"), ipaddress.ip_network("81.82.83.0/24")),
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# -- LAN ------------------------------------------------------------------------------------------------

def test_auto_allow_list_is_own_subnets_and_loopback():
    policy = LanPolicy(allowed_networks(["auto"], INTERFACES))
    for peer in ("192.168.1.77", "127.0.0.1", "127.9.9.9", "::1", "fd00::beef", "::ffff:192.168.1.5", "fe80::2"):
        assert policy.allows(peer), peer
    for peer in ("192.168.2.1", "10.0.0.1", "8.8.8.8", "2001:db8::1", "", None, "not-an-address", "::ffff:8.8.8.8"):
        assert not policy.allows(peer), peer


def test_configured_allow_list_replaces_auto():
    policy = LanPolicy(allowed_networks(["127.0.0.1/32", "10.8.0.0/16"], INTERFACES))
    assert policy.allows("127.0.0.1") and policy.allows("10.8.3.4")
    assert not policy.allows("127.0.0.2") and not policy.allows("192.168.1.77")
    with pytest.raises(ValueError, match="not an address or network"):
        allowed_networks(["192.168.1.0/33"], INTERFACES)


def test_listens_on_lan_facing_addresses_and_loopback_only():
    chosen = [str(a) for a in listen_addresses(["auto"], INTERFACES)]
    assert chosen == ["127.0.0.1", "192.168.1.10", "fd00::10"]  # no public, link-local or other loopback
    assert [str(a) for a in listen_addresses(["127.0.0.2"], INTERFACES)] == ["127.0.0.1", "127.0.0.2"]
    assert str(parse_peer("[fd00::1]")) == "fd00::1" and parse_peer("fe80::1%eth0") is not None


# -- the app on a Falcon test client ----------------------------------------------------------------------

@pytest.fixture
def console(tmp_path: Path) -> Console:
    return make_console(tmp_path)


def make_console(tmp_path: Path) -> Console:
    (tmp_path / "box.toml").write_text('[token]\nmodule = "none.so"\nlabel = "t"\n[signing]\ntsa_urls = ["http://tsa"]\n')
    config = BoxConfig.load(tmp_path)
    db = Database(tmp_path / "box.db")
    return Console(config=config, db=db, accounts=Accounts(db), sessions=SessionStore(db),
                   lan=LanPolicy(allowed_networks(["auto"], INTERFACES)), hosts={"box.lan", "192.168.1.10", "fd00::10", "127.0.0.1"}, port=8443)


@pytest.fixture
def client(console: Console) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(console))


def _get(client, path, peer="192.168.1.77", host="box.lan", **kwargs):
    return client.simulate_get(path, remote_addr=peer, host=host, port=8443, protocol="https", **kwargs)


def test_peer_outside_the_lan_gets_a_clear_403(client):
    result = _get(client, "/login", peer="203.0.113.7")
    assert result.status_code == 403
    assert "Your address 203.0.113.7 is not in that list" in result.text
    assert result.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in result.headers["Content-Security-Policy"]
    assert _get(client, "/static/console.css", peer="203.0.113.7").status_code == 403  # static files too


def test_lan_peer_without_administrator_is_sent_to_first_setup(client):
    for path in ("/", "/keys", "/login", "/audit"):
        result = _get(client, path)
        assert result.status_code == 303 and result.headers["Location"].endswith("/setup"), path
    result = _get(client, "/setup", peer="::ffff:192.168.1.77")
    assert result.status_code == 200 and "One-time set-up code" in result.text


def test_foreign_host_and_origin_refused(client):
    assert _get(client, "/setup", host="rebound.attacker.example").status_code == 403
    assert _get(client, "/setup", host="192.168.1.10").status_code == 200
    assert authority("[FD00::10]:8443") == ("fd00::10", 8443) and authority("Box.LAN") == ("box.lan", 443)
    result = _get(client, "/setup", headers={"Origin": "https://attacker.example"})
    assert result.status_code == 403 and "Cross-site" in result.text


def _session(client) -> tuple[dict, str]:
    page = _get(client, "/setup")
    cookie = page.cookies[COOKIE]
    assert cookie.secure and cookie.http_only and cookie.same_site == "Strict" and cookie.path == "/"
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return {COOKIE: cookie.value}, csrf


def _post(client, path, data, cookies, peer="192.168.1.77"):
    return client.simulate_post(path, remote_addr=peer, host="box.lan", port=8443, protocol="https", cookies=cookies,
                                headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "null"},
                                body="&".join(f"{k}={v}" for k, v in data.items()))


def test_post_without_valid_csrf_token_is_refused(client, console):
    set_setup_code(console.db, "ABCD-EFGH-JK23")
    cookies, csrf = _session(client)
    for data in ({"code": "X"}, {"code": "X", "csrf": "forged"}):
        result = _post(client, "/setup", data, cookies)
        assert result.status_code == 403 and "CSRF" in result.text
    assert _post(client, "/setup", {"code": "X", "csrf": csrf}, {}).status_code == 403  # token without its session
    result = _post(client, "/setup", {"code": "X", "csrf": csrf}, cookies)
    assert result.status_code == 200 and "not the set-up code" in result.text


def test_first_setup_then_login_through_the_app(client, console):
    set_setup_code(console.db, "ABCD-EFGH-JK23")
    cookies, csrf = _session(client)
    result = _post(client, "/setup", {"code": "abcd efgh jk23", "csrf": csrf}, cookies)
    assert result.status_code == 303 and result.headers["Location"].endswith("/setup/password")
    cookies = {COOKIE: result.cookies[COOKIE].value}  # a new session once the code was accepted
    page = _get(client, "/setup/password", cookies=cookies)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    result = _post(client, "/setup/password", {"name": "root", "password": "a" * 14, "confirm": "a" * 14,
                                               "csrf": csrf}, cookies)
    assert result.status_code == 303 and result.headers["Location"].endswith("/")
    assert console.accounts.admins() == ["root"]
    assert _get(client, "/setup").headers["Location"].endswith("/login")


# -- accounts, lockouts, sessions -------------------------------------------------------------------------

def _admin(db: Database, accounts: Accounts, name="root", password="correct horse battery") -> None:
    set_setup_code(db, "ABCD-EFGH-JK23")
    _, nonce = accounts.check_setup_code("ABCD-EFGH-JK23", "192.168.1.7")
    accounts.create_admin(nonce, name, password, password, "192.168.1.7")


def test_password_is_scrypt_with_per_user_salt_and_stored_parameters(tmp_path):
    db = Database(tmp_path / "box.db")
    accounts = Accounts(db)
    _admin(db, accounts)
    row = db.connect().execute("SELECT * FROM console_admins").fetchone()
    assert json.loads(row["kdf"]) == {"alg": "scrypt", "n": 32768, "r": 8, "p": 1, "dklen": 32}
    assert len(row["salt"]) == 16 and b"correct horse" not in row["password_hash"]
    assert db.connect().execute("SELECT COUNT(*) FROM console_setup_code").fetchone()[0] == 0  # code used up
    with pytest.raises(AccountError, match="no longer accepted"):
        set_setup_code(db, "ZZZZ-ZZZZ-ZZ22")
    accounts.change_password("root", "correct horse battery", "another long passphrase",
                             "another long passphrase", "192.168.1.7")
    assert db.connect().execute("SELECT salt FROM console_admins").fetchone()[0] != row["salt"]
    assert accounts.login("root", "another long passphrase", "192.168.1.7").ok


def test_one_time_code_printed_only_without_admin_or_provisioned_code(tmp_path):
    db = Database(tmp_path / "box.db")
    accounts = Accounts(db)
    code = accounts.ensure_setup_code()
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    assert code.encode() not in (tmp_path / "box.db").read_bytes()
    assert accounts.ensure_setup_code() != code  # a new start prints a new code, the old one stops working
    set_setup_code(db, "PROV-ISIO-NED2", source="provisioning")
    assert accounts.ensure_setup_code() is None and accounts.setup_code_source() == "provisioning"
    assert accounts.check_setup_code("prov-isio-ned2", "192.168.1.7")[0].ok


def test_login_locked_per_account_and_per_peer_then_released(tmp_path):
    db, clock = Database(tmp_path / "box.db"), Clock()
    accounts = Accounts(db, max_failures=5, lockout_s=600, clock=clock)
    _admin(db, accounts)
    for _ in range(4):
        assert accounts.login("root", "wrong", "192.168.1.7").message == "Wrong name or password."
    fifth = accounts.login("root", "wrong", "192.168.1.7")
    assert not fifth.ok and "locked for 10 more minutes" in fifth.message
    assert not accounts.login("root", "correct horse battery", "192.168.1.8").ok  # the account is locked
    assert not accounts.login("other", "x", "192.168.1.7").ok  # and so is the peer
    clock.now += 601
    assert accounts.login("root", "correct horse battery", "192.168.1.7").ok
    actions = [r[0] for r in db.connect().execute("SELECT action FROM audit_log ORDER BY seq")]
    assert actions.count("admin.login_failed") == 5 and actions[-1] == "admin.login"  # refusals are not checks
    assert actions.count("admin.lockout") == 1 and actions.count("admin.lockout_ended") == 2  # peer and account


def test_session_expires_when_idle(tmp_path):
    db, clock = Database(tmp_path / "box.db"), Clock()
    sessions = SessionStore(db, idle_s=900, clock=clock)
    session = sessions.create("192.168.1.7", admin="root")
    rows = db.connect().execute("SELECT * FROM console_sessions").fetchall()
    assert rows and all(session.cookie not in str(tuple(row)) for row in rows)  # only its hash is stored
    clock.now += 899
    assert sessions.load(session.cookie)[0].admin == "root"  # and this request counts as activity
    clock.now += 899
    assert sessions.load(session.cookie)[0] is not None
    clock.now += 901
    assert sessions.load(session.cookie) == (None, True)


# -- TLS, nginx, charts, probes -----------------------------------------------------------------------------

def test_box_local_ca_and_console_certificate(tmp_path):
    first = tls.ensure_server_cert(tmp_path, ["box", "box.local"], ["127.0.0.1", "192.168.1.10", "fd00::10"])
    first.leaf.verify_directly_issued_by(first.ca)
    assert set(first.names) == {"box", "box.local", "127.0.0.1", "192.168.1.10", "fd00::10"}
    assert stat.S_IMODE(os.stat(tmp_path / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "console.key").st_mode) == 0o600
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", first.ca_fingerprint)
    again = tls.ensure_server_cert(tmp_path, ["box", "box.local"], ["127.0.0.1", "192.168.1.10", "fd00::10"])
    assert again.leaf.serial_number == first.leaf.serial_number  # reused
    moved = tls.ensure_server_cert(tmp_path, ["box", "box.local"], ["127.0.0.1", "192.168.1.11"])
    assert moved.leaf.serial_number != first.leaf.serial_number and moved.ca_fingerprint == first.ca_fingerprint
    key_pem = (tmp_path / "console.key").read_bytes()
    with pytest.raises(tls.TlsError, match="does not belong"):
        tls.check_organisation((tmp_path / "ca.pem").read_bytes(), key_pem)


def test_nginx_config_overwrites_forwarded_for_and_listens_where_told(tmp_path):
    text = render_config(tmp_path, ["127.0.0.1", "fd00::10"], 8443, 40123, tmp_path / "c.pem", tmp_path / "k.pem")
    assert "listen 127.0.0.1:8443 ssl;" in text and "listen [fd00::10]:8443 ssl;" in text
    assert "proxy_pass http://127.0.0.1:40123;" in text
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text  # replaced, never appended to
    assert "0.0.0.0" not in text and "listen 8443" not in text


def test_usage_chart_is_an_svg_picture_without_inline_styles():
    today = dt.date(2026, 11, 26)
    rows = [UsageRow("a", None, "hash", "2026-11-26", 7), UsageRow("b", None, "pdf", "2026-11-20", 3),
            UsageRow("a", None, "hash", "2026-09-01", 99)]  # older than 30 days
    svg = str(usage_chart(rows, {"a": "billing <system>", "b": "hr"}, today=today))
    assert svg.startswith("<svg") and svg.count("<rect x=") == 2 and "style=" not in svg
    assert "billing &lt;system&gt;" in svg and "<script" not in svg and ">10<" in svg  # axis top


def test_unreachable_service_is_reported_not_raised():
    prober = Prober(ttl_s=60, timeout_s=1)
    result = prober.results([], ["http://127.0.0.1:9/tsa"])
    assert len(result) == 1 and not result[0].ok and result[0].kind == "TSA" and result[0].latency_ms is None
    assert prober.results([], ["http://127.0.0.1:9/tsa"]) is result  # cached


def test_audit_search_filters_and_pages(tmp_path):
    from firmware.store import audit
    from firmware.store.db import immediate

    db = Database(tmp_path / "box.db")
    conn = db.connect()
    with immediate(conn):
        audit.append(conn, [audit.AuditEntry("client:c1", "signature", "c1", {"level": "B-T", "n": i})
                            for i in range(AUDIT_PAGE_SIZE + 10)])
        audit.append(conn, [audit.AuditEntry("admin:root", "client.add", "c2", {"name": "100%_sure"})])

    def total(**query) -> int:
        return search_audit(db, AuditQuery(**query)).total

    found = search_audit(db)
    assert found.total == AUDIT_PAGE_SIZE + 11 and len(found.lines) == AUDIT_PAGE_SIZE and found.pages == 2
    assert found.lines[0].action == "client.add" and found.lines[0].details == "name=100%_sure"
    found = search_audit(db, AuditQuery(action="signature"), page=2)
    assert found.total == AUDIT_PAGE_SIZE + 10 and len(found.lines) == 10 and found.lines[-1].seq == 1
    assert total(actor="admin") == 1 and total(actor="%") == 0  # LIKE wildcards are literal
    assert total(text="100%_sure") == 1 and total(client="c1") == AUDIT_PAGE_SIZE + 10
    assert total(since="2999-01-01") == 0 and total(until="2999-01-01") == AUDIT_PAGE_SIZE + 11
    assert audit_actions(db) == ["client.add", "signature"]


def test_quota_warnings_for_clients_near_their_limits():
    from firmware.store.clients import Client
    from webui.pages.dashboard import quota_warnings

    def client(name, purchased, used, per_day=None, disabled=None):
        return Client(name, name, "2026-01-01", disabled, ("hash",), purchased, used, None, per_day)

    warnings = quota_warnings([client("a", 100, 100), client("b", 100, 95), client("c", 100, 10),
                               client("d", None, 5000, per_day=100), client("e", 10, 10, disabled="x")],
                              {"d": 95})
    assert [(level, name) for level, name, _ in warnings] == [("error", "a"), ("warn", "b"), ("warn", "d")]
    assert "5 of 100 calls left" in warnings[1][2] and "95 of 100 signatures per day" in warnings[2][2]
