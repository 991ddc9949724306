"""The administrator: no default password, a one-time set-up code, scrypt, lockouts.

- A box without an administrator has a one-time set-up code instead of a password. `esignbox
  serve` prints a fresh one on the box's own console when none is set, and the provisioning
  stick may set one with `set_setup_code`. Only its scrypt hash is stored. Whoever enters it
  must then choose the administrator's name and password; the code is consumed at that moment.
- Passwords (and the code) are hashed with scrypt (n=2^15, r=8, p=1: 32 MiB, ~0.1 s), a random
  salt per account; the parameters are stored with the hash so they can be raised later.
- Failed attempts are counted per peer address and per account name. After `max_failures` in a
  row the key is locked for `lockout_s`; while locked the password is not even checked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from firmware.store import audit
from firmware.store.db import Database, immediate

from .state import append_audit, ensure_schema

SCRYPT_PARAMS = {"alg": "scrypt", "n": 2**15, "r": 8, "p": 1, "dklen": 32}
MIN_PASSWORD = 12
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off a screen, typed by hand
CODE_GROUPS = 3  # XXXX-XXXX-XXXX: 12 characters, about 59 bits
SETUP_ACCOUNT = "#setup"  # the lockout key of the one-time code


class AccountError(ValueError):
    """A request the console refuses with a message for the person at the browser."""


def kdf(secret: str, salt: bytes, params: dict) -> bytes:
    if params.get("alg") != "scrypt":
        raise AccountError(f"unknown password hash {params.get('alg')!r}")
    n, r, p, dklen = params["n"], params["r"], params["p"], params["dklen"]
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * r * n + 2**20)


def hash_secret(secret: str, params: dict | None = None) -> tuple[bytes, bytes, str]:
    """(hash, salt, parameters as JSON) for a new secret."""
    params = dict(params or SCRYPT_PARAMS)
    salt = secrets.token_bytes(16)
    return kdf(secret, salt, params), salt, json.dumps(params, sort_keys=True)


def check_secret(secret: str, digest: bytes, salt: bytes, params_json: str) -> bool:
    return hmac.compare_digest(kdf(secret, salt, json.loads(params_json)), digest)


def new_setup_code() -> str:
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(4 * CODE_GROUPS))
    return "-".join(chars[i : i + 4] for i in range(0, len(chars), 4))


def normalise_code(code: str) -> str:
    """What the person typed, as stored: upper case, dashes and spaces ignored."""
    return "".join(c for c in code.upper() if c.isalnum())


def check_password_rules(name: str, password: str, confirm: str) -> None:
    if password != confirm:
        raise AccountError("the two passwords differ")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password needs at least {MIN_PASSWORD} characters")
    if password.lower() == name.lower():
        raise AccountError("the password must not be the account name")


def valid_admin_name(name: str) -> str:
    name = name.strip()
    if not (1 <= len(name) <= 32) or not all(c.isalnum() or c in "._-" for c in name):
        raise AccountError("the name must be 1–32 letters, digits, dots, dashes or underscores")
    return name


def set_setup_code(db: Database, code: str, source: str = "provisioning") -> None:
    """Store (the hash of) a one-time set-up code, replacing any earlier one.

    For the provisioning stick: it knows the code, so the box need not print one. Refused once
    an administrator exists (the code is for first set-up only).
    """
    ensure_schema(db)
    if len(normalise_code(code)) < 10:
        raise AccountError("a set-up code needs at least 10 letters or digits")
    digest, salt, params = hash_secret(normalise_code(code))
    conn = db.connect()
    with immediate(conn):
        if conn.execute("SELECT COUNT(*) FROM console_admins").fetchone()[0]:
            raise AccountError("an administrator exists; a set-up code is no longer accepted")
        conn.execute("DELETE FROM console_setup_code")
        conn.execute(
            "INSERT INTO console_setup_code(id, code_hash, salt, kdf, source, created_at) VALUES (1, ?, ?, ?, ?, ?)",
            (digest, salt, params, source, audit.now()),
        )
        append_audit(conn, "box" if source == "console" else source, "admin.setup_code", {"source": source})


@dataclass(frozen=True)
class Attempt:
    ok: bool
    message: str = ""
    locked_for_s: float = 0.0


class Accounts:
    def __init__(self, db: Database, max_failures: int = 5, lockout_s: float = 600.0, clock=time.time) -> None:
        ensure_schema(db)
        self._db = db
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._clock = clock
        # A hash to check against when the account does not exist: same cost, same timing.
        self._dummy = hash_secret(secrets.token_hex(16))

    # -- state --------------------------------------------------------------------------------
    def admin_exists(self) -> bool:
        return bool(self._db.connect().execute("SELECT COUNT(*) FROM console_admins").fetchone()[0])

    def admins(self) -> list[str]:
        return [r[0] for r in self._db.connect().execute("SELECT name FROM console_admins ORDER BY name")]

    def setup_code_source(self) -> str | None:
        row = self._db.connect().execute("SELECT source FROM console_setup_code").fetchone()
        return row[0] if row else None

    def ensure_setup_code(self) -> str | None:
        """At start: a fresh code to print if there is no administrator and no provisioned code."""
        if self.admin_exists() or self.setup_code_source() == "provisioning":
            return None
        code = new_setup_code()
        set_setup_code(self._db, code, source="console")
        return code

    # -- lockouts -----------------------------------------------------------------------------
    def _lock_keys(self, name: str, peer: str) -> list[str]:
        return [f"peer:{peer}", f"account:{name.lower()}"]

    def locked_for(self, name: str, peer: str) -> float:
        now = self._clock()
        conn = self._db.connect()
        remaining = 0.0
        for key in self._lock_keys(name, peer):
            row = conn.execute("SELECT locked_until FROM console_lockouts WHERE key = ?", (key,)).fetchone()
            if row and row[0] > now:
                remaining = max(remaining, row[0] - now)
        return remaining

    def _fail(self, conn, name: str, peer: str) -> None:
        now = self._clock()
        for key in self._lock_keys(name, peer):
            row = conn.execute("SELECT failures, last_failure FROM console_lockouts WHERE key = ?", (key,)).fetchone()
            failures = 1 if row is None or row[1] < now - self.lockout_s else row[0] + 1
            locked_until = now + self.lockout_s if failures >= self.max_failures else 0.0
            conn.execute(
                "INSERT INTO console_lockouts(key, failures, last_failure, locked_until) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET failures = excluded.failures,"
                " last_failure = excluded.last_failure, locked_until = excluded.locked_until",
                (key, 0 if locked_until else failures, now, locked_until),
            )

    def _clear(self, conn, name: str, peer: str) -> None:
        conn.executemany("DELETE FROM console_lockouts WHERE key = ?", [(k,) for k in self._lock_keys(name, peer)])

    def _locked_message(self, seconds: float) -> str:
        minutes = max(1, round(seconds / 60 + 0.49))
        return (f"Too many failed attempts: signing in is locked for {minutes} more minute"
                f"{'s' if minutes != 1 else ''}. Try again later.")

    # -- login --------------------------------------------------------------------------------
    def login(self, name: str, password: str, peer: str) -> Attempt:
        name = name.strip()
        locked = self.locked_for(name, peer)
        conn = self._db.connect()
        if locked:
            with immediate(conn):
                append_audit(conn, "anonymous", "admin.login_failed",
                             {"name": name[:64], "peer": peer, "reason": "locked"})
            return Attempt(False, self._locked_message(locked), locked)
        row = conn.execute("SELECT * FROM console_admins WHERE name = ?", (name,)).fetchone()
        if row is None:
            check_secret(password, *self._dummy)
            ok = False
        else:
            ok = check_secret(password, row["password_hash"], row["salt"], row["kdf"])
        with immediate(conn):
            if ok:
                self._clear(conn, name, peer)
                append_audit(conn, f"admin:{name}", "admin.login", {"peer": peer})
            else:
                self._fail(conn, name, peer)
                append_audit(conn, "anonymous", "admin.login_failed",
                             {"name": name[:64], "peer": peer, "reason": "bad credentials"})
        if ok:
            return Attempt(True)
        locked = self.locked_for(name, peer)
        if locked:
            return Attempt(False, self._locked_message(locked), locked)
        return Attempt(False, "Wrong name or password.")

    # -- first set-up ---------------------------------------------------------------------------
    def check_setup_code(self, code: str, peer: str) -> tuple[Attempt, str | None]:
        """Step 1 of the first set-up: returns a nonce naming the accepted code, for step 2."""
        locked = self.locked_for(SETUP_ACCOUNT, peer)
        if locked:
            return Attempt(False, self._locked_message(locked), locked), None
        conn = self._db.connect()
        row = conn.execute("SELECT * FROM console_setup_code").fetchone()
        if self.admin_exists():
            return Attempt(False, "This box already has an administrator: sign in instead."), None
        ok = row is not None and check_secret(normalise_code(code), row["code_hash"], row["salt"], row["kdf"])
        with immediate(conn):
            if ok:
                self._clear(conn, SETUP_ACCOUNT, peer)
                append_audit(conn, "anonymous", "admin.setup_code_accepted", {"peer": peer})
            else:
                self._fail(conn, SETUP_ACCOUNT, peer)
                append_audit(conn, "anonymous", "admin.login_failed", {"name": SETUP_ACCOUNT, "peer": peer,
                                                                       "reason": "wrong set-up code"})
        if ok:
            return Attempt(True), row["code_hash"].hex()[:32]
        locked = self.locked_for(SETUP_ACCOUNT, peer)
        if locked:
            return Attempt(False, self._locked_message(locked), locked), None
        if row is None:
            return Attempt(False, "No set-up code is active: restart the box to have a new one printed."), None
        return Attempt(False, "That is not the set-up code shown on the box's console."), None

    def create_admin(self, nonce: str, name: str, password: str, confirm: str, peer: str) -> str:
        """Step 2: the administrator sets name and password; the set-up code is consumed."""
        name = valid_admin_name(name)
        check_password_rules(name, password, confirm)
        digest, salt, params = hash_secret(password)
        conn = self._db.connect()
        with immediate(conn):
            if conn.execute("SELECT COUNT(*) FROM console_admins").fetchone()[0]:
                raise AccountError("This box already has an administrator: sign in instead.")
            row = conn.execute("SELECT code_hash FROM console_setup_code").fetchone()
            if row is None or row[0].hex()[:32] != nonce:
                raise AccountError("The set-up code was replaced or used meanwhile: enter the current one.")
            at = audit.now()
            conn.execute(
                "INSERT INTO console_admins(name, password_hash, salt, kdf, created_at, password_set_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (name, digest, salt, params, at, at))
            conn.execute("DELETE FROM console_setup_code")
            append_audit(conn, f"admin:{name}", "admin.password_set", {"peer": peer, "first_setup": True})
            append_audit(conn, f"admin:{name}", "admin.login", {"peer": peer})
        return name

    def change_password(self, name: str, current: str, password: str, confirm: str, peer: str) -> None:
        locked = self.locked_for(name, peer)
        if locked:
            raise AccountError(self._locked_message(locked))
        conn = self._db.connect()
        row = conn.execute("SELECT * FROM console_admins WHERE name = ?", (name,)).fetchone()
        if row is None or not check_secret(current, row["password_hash"], row["salt"], row["kdf"]):
            with immediate(conn):
                self._fail(conn, name, peer)
                append_audit(conn, f"admin:{name}", "admin.login_failed",
                             {"name": name, "peer": peer, "reason": "wrong current password"})
            raise AccountError("The current password is wrong.")
        check_password_rules(name, password, confirm)
        digest, salt, params = hash_secret(password)
        with immediate(conn):
            conn.execute("UPDATE console_admins SET password_hash = ?, salt = ?, kdf = ?, password_set_at = ?"
                         " WHERE name = ?", (digest, salt, params, audit.now(), name))
            append_audit(conn, f"admin:{name}", "admin.password_set", {"peer": peer, "first_setup": False})
