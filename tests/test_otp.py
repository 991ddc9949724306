"""One-time codes: single use, expiry, attempt limit, kept as an HMAC, audited.

The code reaches the test through a recording CodeSender standing in for the mail service (the
end-to-end path through the real SMTP relay is tested with the mail API).
"""

from __future__ import annotations

import hashlib

import pytest

from firmware.otp import OtpCodes, OtpSettings
from firmware.store import Database, audit


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, bool]] = []

    def send_code(self, client_id: str, address: str, code: str, allow_plain: bool) -> bool:
        if not allow_plain and address.startswith("nocert"):
            raise ValueError(f"{address} has no encryption certificate and plain mail is not allowed")
        self.sent.append((client_id, address, code, allow_plain))
        return not address.startswith("nocert")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def otp(tmp_path):
    db = Database(tmp_path / "box.db")
    sender, clock = RecordingSender(), Clock()
    codes = OtpCodes(db, tmp_path, sender, OtpSettings(digits=6, lifetime_s=600, max_attempts=3), clock)
    return codes, sender, clock, db


def test_a_code_is_right_once(otp):
    codes, sender, _, _ = otp
    issued = codes.issue("c1", "bob@example.com", allow_plain=False)
    assert issued.encrypted and issued.expires_in_s == 600
    [(_, address, code, _)] = sender.sent
    assert address == "bob@example.com" and len(code) == 6 and code.isdigit()
    assert codes.verify("c1", issued.id, code).reason == "ok"
    assert codes.verify("c1", issued.id, code).reason == "used"


def test_wrong_codes_count_and_lock_the_code(otp):
    codes, sender, _, _ = otp
    issued = codes.issue("c1", "bob@example.com", allow_plain=False)
    right = sender.sent[0][2]
    wrong = "000000" if right != "000000" else "111111"
    assert [codes.verify("c1", issued.id, wrong).reason for _ in range(3)] == ["wrong_code"] * 3
    assert codes.verify("c1", issued.id, right).reason == "too_many_attempts"


def test_an_expired_code_is_refused(otp):
    codes, sender, clock, _ = otp
    issued = codes.issue("c1", "bob@example.com", allow_plain=False)
    clock.now += 601
    assert codes.verify("c1", issued.id, sender.sent[0][2]).reason == "expired"


def test_another_client_cannot_check_the_code(otp):
    codes, sender, _, _ = otp
    issued = codes.issue("c1", "bob@example.com", allow_plain=False)
    assert codes.verify("c2", issued.id, sender.sent[0][2]).reason == "unknown"
    assert codes.verify("c1", issued.id, sender.sent[0][2]).reason == "ok"


def test_the_database_holds_neither_code_nor_address(otp):
    codes, sender, _, db = otp
    issued = codes.issue("c1", "bob@example.com", allow_plain=False)
    code = sender.sent[0][2]
    row = db.connect().execute("SELECT * FROM otp_codes WHERE id = ?", (issued.id,)).fetchone()
    assert row["code_mac"] not in (code.encode(), hashlib.sha256(code.encode()).digest(),
                                   hashlib.sha256(f"{issued.id}\0{code}".encode()).digest())
    dump = "\n".join(db.connect().iterdump())
    assert "bob@example.com" not in dump and f"'{code}'" not in dump
    actions = [e["action"] for e in audit.export(db.connect(), 0)]
    assert actions == ["otp.issue"]
    codes.verify("c1", issued.id, code)
    assert [e["details"]["outcome"] for e in audit.export(db.connect(), 0) if e["action"] == "otp.verify"] == ["ok"]


def test_without_a_certificate_plain_mail_only_when_allowed(otp):
    codes, _, _, db = otp
    with pytest.raises(ValueError, match="plain mail is not allowed"):
        codes.issue("c1", "nocert@example.com", allow_plain=False)
    assert db.connect().execute("SELECT COUNT(*) FROM otp_codes").fetchone()[0] == 0  # nothing kept
    assert not codes.issue("c1", "nocert@example.com", allow_plain=True).encrypted
