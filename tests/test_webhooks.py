"""Webhooks (firmware/webhooks/): events queued in SQLite, posted to a real HTTP receiver on
127.0.0.1 that checks every signature with the receiver's code below, the few lines the README
gives customers, written with hmac and hashlib only (not the box's own `verify`)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from firmware.config import BoxConfig, ConfigError, WebhookSettings
from firmware.errors import InvalidRequest
from firmware.store import Database, audit, immediate
from firmware.webhooks import WebhookQueue, WebhookSender, check_webhook_url, enqueue, signature_header, verify

from .support import free_port

SECRET = b"whsec-0123456789abcdef0123456789abcdef"
# The receivers here listen on 127.0.0.1, which a box refuses unless allow_loopback (as on a dev box).
SETTINGS = WebhookSettings(timeout_seconds=5.0, max_attempts=3, retry_seconds=0.2, max_retry_seconds=0.5,
                           allow_loopback=True)
GUARDED = dataclasses.replace(SETTINGS, allow_loopback=False)


# -- the receiver's code, as the README shows it (Python standard library only) -------------------

def verify_esignbox_webhook(secret: bytes, signature: str, body: bytes, now: float | None = None,
                            tolerance_s: int = 300) -> bool:
    """Check the Esignbox-Signature header ("t=<unix>,v1=<hex>") against the raw request body."""
    fields = dict(item.split("=", 1) for item in signature.split(",") if "=" in item)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False  # too old (or from the future): a replay
    return hmac.compare_digest(expected, fields.get("v1", ""))


# -- a receiver ------------------------------------------------------------------------------------

@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    """An HTTP server answering POSTs with the next of ``answers`` (then 200), recording each request."""

    port: int = 0
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0
    hold: threading.Event | None = None  # the next request waits for it after reading its body
    reached: threading.Event = field(default_factory=threading.Event)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's hook name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = Request(self.path, dict(self.headers), body,
                                  verify_esignbox_webhook(SECRET, self.headers.get("Esignbox-Signature", ""), body))
                with receiver.lock:
                    receiver.requests.append(request)
                    hold, receiver.hold = receiver.hold, None
                    status, headers = receiver.answers.pop(0) if receiver.answers else (200, {})
                if hold is not None:
                    receiver.reached.set()
                    hold.wait(30)
                time.sleep(receiver.delay_s)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str = "/hooks/esignbox") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def event_ids(self) -> list[str]:
        return [request.headers["Esignbox-Event-Id"] for request in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "box.db")


def _contract_change(db: Database, url: str, event: str = "contract.completed", envelope: str = "env-1") -> str:
    """What the contracts service does: the state change, its audit entry and its event in one transaction."""
    conn = db.connect()
    with immediate(conn):
        audit.append(conn, [audit.AuditEntry("client:c1", event, "c1", {"envelope": envelope})])
        return enqueue(conn, url, SECRET, event, {"envelope": envelope, "status": "completed"})


def _audit(db: Database, action: str) -> list[dict[str, object]]:
    return [json.loads(row[0]) for row in db.connect().execute(
        "SELECT details FROM audit_log WHERE action = ? ORDER BY seq", (action,))]


# -- tests -----------------------------------------------------------------------------------------

def test_an_event_is_delivered_once_signed_with_its_headers(db, receiver):
    event_id = _contract_change(db, receiver.url("/hooks/secret-path-token"))
    sender = WebhookSender(db, SETTINGS)
    assert sender.deliver_due() == 1
    assert sender.deliver_due() == 0
    [request] = receiver.requests
    assert request.path == "/hooks/secret-path-token" and request.verified
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Esignbox-Event-Id"] == event_id
    body = json.loads(request.body)
    assert body["id"] == event_id and body["type"] == "contract.completed"
    assert body["data"] == {"envelope": "env-1", "status": "completed"} and body["created_at"].endswith("+00:00")
    status = WebhookQueue(db).status(event_id)
    assert status is not None and (status.status, status.attempts, status.last_error) == ("delivered", 1, None)
    [entry] = _audit(db, "webhook.delivered")
    assert entry == {"id": event_id, "type": "contract.completed", "host": "127.0.0.1", "attempts": 1}
    row = db.connect().execute("SELECT secret, body FROM webhook_outbox WHERE id = ?", (event_id,)).fetchone()
    assert tuple(row) == (None, None)  # nothing of the event's content or key stays once delivered


def test_an_event_of_a_rolled_back_change_is_never_sent(db, receiver):
    conn = db.connect()
    with pytest.raises(RuntimeError), immediate(conn):
        enqueue(conn, receiver.url(), SECRET, "contract.cancelled", {"envelope": "env-2"})
        raise RuntimeError("the state change failed")
    assert WebhookSender(db, SETTINGS).deliver_due() == 0
    assert receiver.requests == []


def test_a_tampered_body_an_old_timestamp_or_another_secret_fails_verification(db, receiver):
    _contract_change(db, receiver.url())
    WebhookSender(db, SETTINGS).deliver_due()
    [request] = receiver.requests
    header, body = request.headers["Esignbox-Signature"], request.body
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert abs(timestamp - time.time()) < 10
    tampered = body.replace(b'"completed"', b'"cancelled"', 1)
    assert tampered != body
    for check in (verify_esignbox_webhook, verify):  # the receiver's code and the box's agree
        assert check(SECRET, header, body, now=timestamp + 299)
        assert not check(SECRET, header, tampered, now=timestamp)
        assert not check(SECRET, header, body + b" ", now=timestamp)
        assert not check(b"another secret", header, body, now=timestamp)
        assert not check(SECRET, header, body, now=timestamp + 301)  # a replay five minutes later
        assert not check(SECRET, header.replace(f"t={timestamp}", f"t={timestamp + 400}"), body, now=timestamp + 400)
        assert not check(SECRET, "v1=" + header.split("v1=")[1], body, now=timestamp)
    assert signature_header(SECRET, timestamp, body) == header


def test_a_receiver_that_is_down_keeps_the_event_queued_until_it_is_back(db):
    port = free_port()
    event_id = _contract_change(db, f"http://127.0.0.1:{port}/hook")
    sender, queue = WebhookSender(db, SETTINGS), WebhookQueue(db)
    assert sender.deliver_due() == 1  # connection refused
    status = queue.status(event_id)
    assert status is not None and status.status == "queued" and "ConnectionError" in (status.last_error or "")
    assert sender.deliver_due() == 0  # not due before its backoff
    back = Receiver(port=port, answers=[(500, {})]).start()
    try:
        time.sleep(SETTINGS.retry_seconds + 0.05)
        assert sender.deliver_due() == 1  # up, but answering 500
        status = queue.status(event_id)
        assert status is not None and status.status == "queued" and status.last_error == "HTTP 500: ok"
        time.sleep(2 * SETTINGS.retry_seconds + 0.05)
        assert sender.deliver_due() == 1
        assert sender.deliver_due() == 0
    finally:
        back.stop()
    assert back.event_ids() == [event_id, event_id] and all(request.verified for request in back.requests)
    status = queue.status(event_id)
    assert status is not None and (status.status, status.attempts) == ("delivered", 3)
    assert [entry["id"] for entry in _audit(db, "webhook.delivered")] == [event_id]


def test_error_answers_count_toward_max_attempts_then_the_event_fails_audited(db, receiver):
    receiver.answers = [(500, {}), (404, {}), (503, {}), (200, {})]
    event_id = _contract_change(db, receiver.url())
    sender = WebhookSender(db, SETTINGS)
    for wait in (0.0, SETTINGS.retry_seconds, 2 * SETTINGS.retry_seconds):
        time.sleep(wait + 0.05 if wait else 0)
        assert sender.deliver_due() == 1
    time.sleep(SETTINGS.max_retry_seconds + 0.05)
    assert sender.deliver_due() == 0  # given up after 3 attempts: the 200 is never asked for
    assert len(receiver.requests) == 3
    status = WebhookQueue(db).status(event_id)
    assert status is not None and (status.status, status.attempts, status.last_error) == ("failed", 3, "HTTP 503: ok")
    [entry] = _audit(db, "webhook.failed")
    assert entry == {"id": event_id, "type": "contract.completed", "host": "127.0.0.1", "attempts": 3,
                     "error": "HTTP 503: ok"}
    assert _audit(db, "webhook.delivered") == []


def test_a_redirect_is_not_followed(db, receiver):
    receiver.answers = [(307, {"Location": receiver.url("/elsewhere")})]
    event_id = _contract_change(db, receiver.url())
    assert WebhookSender(db, SETTINGS).deliver_due() == 1
    assert [request.path for request in receiver.requests] == ["/hooks/esignbox"]
    status = WebhookQueue(db).status(event_id)
    assert status is not None and status.status == "queued"
    assert status.last_error == f"HTTP 307: redirect to {receiver.url('/elsewhere')} not followed"


def test_two_senders_never_deliver_one_event_twice(db, receiver):
    receiver.delay_s = 0.01
    ids = {_contract_change(db, receiver.url(), envelope=f"env-{n}") for n in range(40)}
    start = threading.Barrier(2)
    counts: list[int] = []

    def send() -> None:
        sender = WebhookSender(Database(db.path), SETTINGS)  # a Database of its own, as in another process
        start.wait()
        counts.append(sender.deliver_due())

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(counts) == 40 and min(counts) > 0, counts  # both worked, neither twice on one event
    assert sorted(receiver.event_ids()) == sorted(ids)
    assert all(request.verified for request in receiver.requests)


def test_the_sender_thread_delivers_when_woken(db, receiver):
    sender = WebhookSender(db, SETTINGS, poll_s=60)
    sender.start()
    try:
        event_id = _contract_change(db, receiver.url())
        sender.wake()
        deadline = time.monotonic() + 10
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sender.stop()
    assert receiver.event_ids() == [event_id]


_KILLED_SENDER = """
import sys
from pathlib import Path
from firmware.config import WebhookSettings
from firmware.store import Database
from firmware.webhooks import WebhookSender
WebhookSender(Database(Path(sys.argv[1])), WebhookSettings(timeout_seconds=5.0, allow_loopback=True)).deliver_due()
"""


def test_kill_9_mid_delivery_loses_nothing(db, receiver):
    """A sender process killed with SIGKILL while the receiver holds its request: the event stays
    claimed until the lease (6 timeouts) runs out, then goes again with the same id and body, which
    receivers dedupe on; the other events go once."""
    ids = [_contract_change(db, receiver.url(), envelope=f"env-{n}") for n in range(3)]
    receiver.hold = hold = threading.Event()
    process = subprocess.Popen([sys.executable, "-c", _KILLED_SENDER, str(db.path)],
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        assert receiver.reached.wait(30), "the sender never reached the receiver"
    finally:
        process.kill()  # SIGKILL: no cleanup of any kind
        process.wait()
        hold.set()
    queue = WebhookQueue(db)
    states = [status.status for status in map(queue.status, ids) if status is not None]
    assert sorted(states) == ["queued", "queued", "sending"]
    killed = receiver.event_ids()[0]
    assert WebhookSender(db, SETTINGS).deliver_due() == 2  # the two queued; the killed one's lease still holds
    after_lease = WebhookSender(db, SETTINGS, clock=lambda: time.time() + 6 * 5.0 + 1)
    assert after_lease.deliver_due() == 1
    assert sorted(receiver.event_ids()) == sorted([*ids, killed])
    first, again = [request for request in receiver.requests if request.headers["Esignbox-Event-Id"] == killed]
    assert first.body == again.body and first.verified and again.verified
    assert all(status is not None and status.status == "delivered" for status in map(queue.status, ids))


@pytest.mark.parametrize("url", [
    "https://erp.example.org/hooks/esignbox?token=abc", "http://10.0.0.5:8080/hook", "http://[2001:db8::1]/h",
    "http://192.168.1.20/hook", "http://[fd00::20]/hook", "http://localhost/hook",  # a name: checked at delivery
])
def test_webhook_urls_the_box_accepts(url):
    assert check_webhook_url(url, allow_loopback=False) == url


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:8443/", "127.0.0.1 is a loopback address"),
    ("http://127.8.9.10/", "loopback"),
    ("http://[::1]:9180/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://0.0.0.0:8080/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
])
def test_webhook_urls_to_the_box_itself_or_metadata_are_refused(url, reason):
    with pytest.raises(InvalidRequest, match=f"webhook URL refused: .*{reason}"):
        check_webhook_url(url, allow_loopback=False)
    if "loopback" in reason:
        assert check_webhook_url(url, allow_loopback=True) == url
    else:
        with pytest.raises(InvalidRequest, match=reason):
            check_webhook_url(url, allow_loopback=True)


def test_a_name_resolving_to_the_box_itself_is_refused_at_delivery_and_fails_like_a_dead_receiver(db, receiver):
    """localhost (and 127.1, which no URL check sees as an address) reach the receiver on 127.0.0.1
    only where loopback is allowed; elsewhere each attempt fails without a byte sent, says why, and the
    event is given up and audited after max_attempts while other events go on."""
    refused = [_contract_change(db, f"http://{host}:{receiver.port}/hook", envelope=host)
               for host in ("localhost", "127.1")]
    metadata = _contract_change(db, "http://169.254.169.254/latest/meta-data/", envelope="metadata")
    queue = WebhookQueue(db)
    for _ in range(GUARDED.max_attempts):
        WebhookSender(db, GUARDED).deliver_due()
        time.sleep(GUARDED.max_retry_seconds + 0.05)
    assert receiver.requests == []
    for event_id, error in zip([*refused, metadata], ["localhost resolves to", "127.1 resolves to 127.0.0.1 is a"
                                                      " loopback address", "169.254.169.254 is a link-local"], strict=True):
        status = queue.status(event_id)
        assert status is not None and (status.status, status.attempts) == ("failed", GUARDED.max_attempts), status
        assert (status.last_error or "").startswith("destination refused: ") and error in status.last_error, status
    failed = _audit(db, "webhook.failed")
    assert sorted(entry["host"] for entry in failed) == ["127.1", "169.254.169.254", "localhost"]
    assert all(entry["error"].startswith("destination refused: ") for entry in failed)

    allowed = _contract_change(db, f"http://localhost:{receiver.port}/hook", envelope="allowed")
    assert WebhookSender(db, SETTINGS).deliver_due() == 1
    assert receiver.event_ids() == [allowed]


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://erp.example.org/hook", "must be http:// or https://, not ftp"),
    ("erp.example.org/hook", "must be http:// or https://, not without a scheme"),
    ("file:///etc/passwd", "must be http:// or https://"),
    ("https://user:pass@erp.example.org/hook", "must not contain a user name or password"),
    ("https://token@erp.example.org/hook", "must not contain a user name or password"),
    ("https:///hook", "has no host"),
    ("https://erp.example.org:99999/hook", "invalid port"),
    ("https://erp.example.org/hook#part", "must not have a fragment"),
    ("https://erp.example.org/ho ok", "spaces or control characters"),
    ("https://erp.example.org/hook\r\nX-Injected: 1", "spaces or control characters"),
    ("https://erp.example.org/" + "a" * 2048, "longer than 2048 characters"),
])
def test_webhook_urls_the_box_refuses(url, reason):
    with pytest.raises(InvalidRequest, match=reason):
        check_webhook_url(url, allow_loopback=False)


def test_the_webhooks_section_of_box_toml(tmp_path):
    base = '[token]\nmodule = "softhsm"\nlabel = "box"\n'
    assert BoxConfig.from_text(tmp_path, base).webhooks == WebhookSettings()
    config = BoxConfig.from_text(tmp_path, base + "[webhooks]\nmax_attempts = 4\nretry_seconds = 5\n")
    assert (config.webhooks.max_attempts, config.webhooks.retry_seconds) == (4, 5.0)
    with pytest.raises(ConfigError, match=r"line 5: \[webhooks\] timeout_seconds: must be positive"):
        BoxConfig.from_text(tmp_path, base + "[webhooks]\ntimeout_seconds = 0\n")
