"""The admin console under attack: concurrent password and set-up-code guessing, a flood of
attempts while locked, hostile audit-page parameters, and forged Host and Origin headers.

Guessing runs on real threads against the real scrypt check and the real SQLite database; the
number of checks that ran is read from the audit log, where each completed check leaves exactly
one entry (`admin.login_failed` with its reason, or the success)."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import falcon.testing
import pytest

from firmware.operations.accounts import SETUP_ACCOUNT, Accounts, set_setup_code
from firmware.store.db import Database
from webui.app import create_app

from .test_webui_units import COOKIE, Clock, _admin, _get, _post, _session, client, console, make_console  # noqa: F401

CHECK_REASONS = ("bad credentials", "wrong set-up code")


def _checks(db: Database) -> int:
    """Secret checks that ran: one audit entry per failed check, one per accepted one."""
    conn = db.connect()
    failed = conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'admin.login_failed'"
                          " AND json_extract(details, '$.reason') IN (?, ?)", CHECK_REASONS).fetchone()[0]
    accepted = conn.execute("SELECT COUNT(*) FROM audit_log"
                            " WHERE action IN ('admin.login', 'admin.setup_code_accepted')").fetchone()[0]
    return failed + accepted


def _hammer(threads: int, attempt, per_thread: int = 25, seconds: float = 4.0) -> int:
    """Run ``attempt(thread_index, n)`` on real threads, all released at once; bounded in count and time.

    Returns how many attempts were made."""
    start, deadline = threading.Barrier(threads), time.monotonic() + seconds
    errors: list[BaseException] = []
    made: list[int] = []

    def run(i: int) -> None:
        try:
            start.wait()
            for n in range(per_thread):
                if time.monotonic() > deadline:
                    return
                attempt(i, n)
                made.append(1)
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 30)
    assert not errors, errors
    return len(made)


def test_password_guessing_threads_from_one_peer_get_at_most_the_limit(tmp_path: Path):
    db = Database(tmp_path / "box.db")
    accounts = Accounts(db, max_failures=5, lockout_s=600)
    _admin(db, accounts)
    before = _checks(db)
    _hammer(8, lambda i, n: accounts.login("root" if i % 2 else f"guess{i}", f"wrong {n}", "192.168.1.66"))
    assert _checks(db) - before <= 5
    assert accounts.locked_for("anyone", "192.168.1.66") > 500  # the peer ends locked
    assert not accounts.login("root", "correct horse battery", "192.168.1.66").ok


def test_password_guessing_threads_from_many_peers_on_one_account_get_at_most_the_limit(tmp_path: Path):
    db = Database(tmp_path / "box.db")
    accounts = Accounts(db, max_failures=5, lockout_s=600)
    _admin(db, accounts)
    before = _checks(db)
    _hammer(8, lambda i, n: accounts.login("root", f"wrong {n}", f"192.168.1.{100 + i}"))
    assert _checks(db) - before <= 5
    assert accounts.locked_for("root", "192.168.1.200") > 500  # the account ends locked
    assert not accounts.login("root", "correct horse battery", "192.168.1.200").ok


def test_parallel_setup_codes_through_the_app_get_at_most_the_limit_and_lock_the_peer(client, console):
    set_setup_code(console.db, "ABCD-EFGH-JK23")
    forms = [_session(client) for _ in range(20)]
    statuses: list[int] = []

    def attempt(i: int, n: int) -> None:
        cookies, csrf = forms[i]
        statuses.append(_post(client, "/setup", {"code": f"WRONG-{i:04d}-{n:04d}", "csrf": csrf}, cookies).status_code)

    _hammer(20, attempt, per_thread=3)
    assert _checks(console.db) <= 5
    assert console.accounts.locked_for(SETUP_ACCOUNT, "192.168.1.77") > 500
    assert statuses.count(429) >= len(statuses) - 5 and set(statuses) <= {200, 429}
    cookies, csrf = forms[0]
    right = _post(client, "/setup", {"code": "ABCD-EFGH-JK23", "csrf": csrf}, cookies)
    assert right.status_code == 429  # even the right code waits for the lockout to end


def test_attempts_while_locked_do_not_flood_the_audit_log(tmp_path: Path):
    db, clock = Database(tmp_path / "box.db"), Clock()
    accounts = Accounts(db, max_failures=5, lockout_s=600, clock=clock)
    _admin(db, accounts)
    for _ in range(5):
        accounts.login("root", "wrong", "192.168.1.66")
    conn = db.connect()
    entries = conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    lockouts = conn.execute("SELECT details FROM audit_log WHERE action = 'admin.lockout'").fetchall()
    assert len(lockouts) == 1 and "192.168.1.66" in lockouts[0][0]  # recorded once, when it starts
    started = time.monotonic()
    made = _hammer(8, lambda i, n: accounts.login("root" if i % 2 else f"x{i}", "guess", "192.168.1.66"),
                   per_thread=25)
    refused_per_s = made / (time.monotonic() - started)
    assert made > 50 and conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == entries
    clock.now += 601  # the lockout is over: one entry sums up what it refused
    assert accounts.login("root", "correct horse battery", "192.168.1.66").ok
    ended = {d["key"]: d["refused"] for d in (json.loads(r[0]) for r in conn.execute(
        "SELECT details FROM audit_log WHERE action = 'admin.lockout_ended'"))}
    assert ended["peer:192.168.1.66"] == made and 0 < ended["account:root"] < made
    assert conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] <= entries + 3  # ended ×2, login
    print(f"refused attempts while locked: {refused_per_s:.0f}/s")


# -- the audit page's query parameters ------------------------------------------------------------------

@pytest.fixture(scope="module")
def admin(tmp_path_factory) -> tuple[falcon.testing.TestClient, dict]:
    """A console with an administrator, and the cookies of their session (set up once: scrypt is slow)."""
    console = make_console(tmp_path_factory.mktemp("console"))
    client = falcon.testing.TestClient(create_app(console))
    set_setup_code(console.db, "ABCD-EFGH-JK23")
    cookies, csrf = _session(client)
    result = _post(client, "/setup", {"code": "ABCD-EFGH-JK23", "csrf": csrf}, cookies)
    cookies = {COOKIE: result.cookies[COOKIE].value}
    csrf = re.search(r'name="csrf" value="([^"]+)"', _get(client, "/setup/password", cookies=cookies).text).group(1)
    result = _post(client, "/setup/password", {"name": "root", "password": "a" * 14, "confirm": "a" * 14,
                                               "csrf": csrf}, cookies)
    return client, {COOKIE: result.cookies[COOKIE].value}


def test_audit_page_refuses_bad_parameters_with_400(admin):
    client, cookies = admin
    for query in ("page=99999999999999999999999", "page=-1", "page=0", "page=abc", "page=1.5", "page=1e3",
                  "page=%00", "page=", "page=9223372036854775807", "since=2024-02-30", "since=99999-01-01",
                  "since=yesterday", "until=0000-00-00", "until=2024-13-01", "since=%ff%fe"):
        result = _get(client, "/audit", cookies=cookies, query_string=query)
        assert result.status_code == 400, (query, result.status_code)


def test_audit_page_answers_extreme_but_valid_parameters(admin):
    client, cookies = admin
    for query in ("until=9999-12-31", "since=0001-01-01", "since=9999-12-31&until=0001-01-01", "page=2",
                  "page=1000000", "q=%ff%00&actor=%25&action=x"):
        result = _get(client, "/audit", cookies=cookies, query_string=query)
        assert result.status_code == 200, (query, result.status_code)
    everything = _get(client, "/audit", cookies=cookies, query_string="since=0001-01-01&until=9999-12-31")
    assert "admin.password_set" in everything.text  # the widest dates filter nothing out


def test_audit_export_refuses_bad_sequence_numbers_with_400(admin):
    client, cookies = admin
    for query in ("after=99999999999999999999", "after=9223372036854775808", "after=-1", "after=abc"):
        result = _get(client, "/audit/export", cookies=cookies, query_string=query)
        assert result.status_code == 400, (query, result.status_code)
    assert _get(client, "/audit/export", cookies=cookies, query_string="after=9223372036854775807").status_code == 200


# -- Host and Origin ---------------------------------------------------------------------------------------

def test_host_must_name_the_box_on_its_console_port(client):
    for host in ("box.lan:8443", "BOX.lan:8443", "192.168.1.10:8443", "127.0.0.1:8443", "[fd00::10]:8443",
                 "[FD00:0::10]:8443"):
        assert _get(client, "/setup", headers={"Host": host}).status_code == 200, host
    for host in ("box.lan", "box.lan:443", "box.lan:8444", "box.lan:08443", "box.lan:8443@evil.example",
                 "evil.example@box.lan:8443", "user:pw@box.lan:8443", "box.lan:8443:8443", "box.lan:",
                 "box.lan :8443", "box.lan%00:8443", "box.lan/x:8443", "box.lan.:8443", "[fd00::10]", "fd00::10",
                 "[fd00::10]:8444", "[box.lan]:8443", "", "evil.example:8443", "box.lan:99999999999999999999"):
        result = _get(client, "/setup", headers={"Host": host})
        assert result.status_code == 403 and "does not answer" in result.text, host


def test_origin_must_be_null_or_the_console_itself(client):
    for origin in ("null", "https://box.lan:8443", "https://192.168.1.10:8443", "https://[fd00::10]:8443"):
        assert _get(client, "/setup", headers={"Origin": origin}).status_code == 200, origin
    for origin in ("https://box.lan", "https://box.lan:443", "https://box.lan:8444", "http://box.lan:8443",
                   "https://box.lan:8443/", "https://box.lan:8443/path", "https://box.lan:8443?x",
                   "https://box.lan:8443@evil.example", "https://evil.example@box.lan:8443",
                   "https://user@box.lan:8443", "https://box.lan:8443.evil.example", "HTTPS://evil.example:8443",
                   "null, https://box.lan:8443", "", "https://evil.example:8443", "file://", "https:// box.lan:8443"):
        result = _get(client, "/setup", headers={"Origin": origin})
        assert result.status_code == 403 and "Cross-site" in result.text, origin


def test_lockout_table_of_an_older_box_gets_its_refused_counter(tmp_path: Path):
    db = Database(tmp_path / "box.db")
    db.connect().execute("CREATE TABLE console_lockouts (key TEXT PRIMARY KEY, failures INTEGER NOT NULL,"
                         " last_failure REAL NOT NULL, locked_until REAL NOT NULL DEFAULT 0)")
    db.connect().execute("INSERT INTO console_lockouts VALUES ('peer:192.168.1.66', 5, 1e12, 2e12)")
    accounts = Accounts(db, clock=Clock())
    assert not accounts.login("root", "guess", "192.168.1.66").ok
    assert db.connect().execute("SELECT refused FROM console_lockouts").fetchone()[0] == 1
