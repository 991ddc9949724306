"""Console sessions: a random cookie, its hash in SQLite, a CSRF token, idle expiry.

The cookie (`__Host-esb_session`: HttpOnly, Secure, SameSite=Strict, Path=/, no Domain) holds
256 random bits; the database keeps only their SHA-256, so a copy of box.db does not let anyone
in. A visitor gets a session before signing in, so the login and set-up forms carry a CSRF token
too; signing in replaces it with a new one (no session fixation). A session ends after
`idle_s` without a request, and after `absolute_s` in any case.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware.operations import accounts
from firmware.store import Database, immediate

COOKIE = "__Host-esb_session"
TOUCH_S = 10.0  # idle time is measured to within this many seconds


def _key(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode()).hexdigest()


@dataclass
class Session:
    key_hash: str
    admin: str | None
    csrf: str
    setup_nonce: str | None = None
    flash: list[list[str]] = field(default_factory=list)  # [kind, text] pairs
    cookie: str | None = None  # set only when the session was just created: send it to the browser
    expired: bool = False  # the browser's previous session ran out (say so on the login page)

    def csrf_ok(self, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(self.csrf.encode(), token.encode())


class SessionStore:
    def __init__(self, db: Database, idle_s: float = 900.0, absolute_s: float = 12 * 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        accounts.ensure_schema(db)
        self._db = db
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._clock = clock

    def load(self, cookie_value: str | None) -> tuple[Session | None, bool]:
        """The live session for a cookie, touched; and whether the cookie named an expired one."""
        if not cookie_value:
            return None, False
        now = self._clock()
        conn = self._db.connect()
        key = _key(cookie_value)
        row = conn.execute("SELECT * FROM console_sessions WHERE key_hash = ?", (key,)).fetchone()
        if row is None:
            return None, False
        if row["last_seen"] < now - self.idle_s or row["created"] < now - self.absolute_s:
            with immediate(conn):
                conn.execute("DELETE FROM console_sessions WHERE key_hash = ?", (key,))
            return None, row["admin"] is not None
        if now - row["last_seen"] >= TOUCH_S:  # one durable write per TOUCH_S, not per request
            with immediate(conn):
                conn.execute("UPDATE console_sessions SET last_seen = ? WHERE key_hash = ?", (now, key))
        return Session(key, row["admin"], row["csrf"], row["setup_nonce"], json.loads(row["flash"])), False

    def create(self, peer: str | None, admin: str | None = None, setup_nonce: str | None = None) -> Session:
        now = self._clock()
        cookie = secrets.token_urlsafe(32)
        session = Session(_key(cookie), admin, secrets.token_urlsafe(32), setup_nonce, cookie=cookie)
        conn = self._db.connect()
        with immediate(conn):
            conn.execute("DELETE FROM console_sessions WHERE last_seen < ? OR created < ?",
                         (now - self.idle_s, now - self.absolute_s))
            conn.execute(
                "INSERT INTO console_sessions(key_hash, admin, setup_nonce, csrf, peer, created, last_seen)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session.key_hash, admin, setup_nonce, session.csrf, peer, now, now),
            )
        return session

    def replace(self, old: Session | None, peer: str | None, admin: str | None = None,
                setup_nonce: str | None = None) -> Session:
        """A new session (new cookie, new CSRF token) instead of ``old``: at sign-in, set-up, sign-out."""
        if old is not None:
            self.delete(old)
        new = self.create(peer, admin, setup_nonce)
        if old is not None:
            new.flash = old.flash
            self._save_flash(new)
        return new

    def delete(self, session: Session) -> None:
        conn = self._db.connect()
        with immediate(conn):
            conn.execute("DELETE FROM console_sessions WHERE key_hash = ?", (session.key_hash,))

    def end_all(self, admin: str, keep: Session | None = None) -> None:
        """Sign the administrator out everywhere else (after a password change)."""
        conn = self._db.connect()
        with immediate(conn):
            conn.execute("DELETE FROM console_sessions WHERE admin = ? AND key_hash != ?",
                         (admin, keep.key_hash if keep else ""))

    # -- one-shot messages shown on the next page -------------------------------------------------
    def flash(self, session: Session, kind: str, text: str) -> None:
        session.flash.append([kind, text])
        self._save_flash(session)

    def pop_flash(self, session: Session) -> list[list[str]]:
        messages, session.flash = session.flash, []
        if messages:
            self._save_flash(session)
        return messages

    def _save_flash(self, session: Session) -> None:
        conn = self._db.connect()
        with immediate(conn):
            conn.execute("UPDATE console_sessions SET flash = ? WHERE key_hash = ?",
                         (json.dumps(session.flash), session.key_hash))
