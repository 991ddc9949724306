"""The one provisioning key the box trusts: which, since when, and how it got there.

Here, not in provisioning/, because three faces need it: the stick (an enrolment stick on a box
that trusts no key yet), the command line (`esignbox provision enroll`, an operator with a shell)
and the box's screen (`esignbox status --screen`, which must not open box.db).

A key is trusted in one SQLite transaction that writes the ``provisioning_trust`` row and its
audit entry (`record`); ``<state>/provisioning/trusted.pub``, which the bundle checks read, and
``trusted.json`` beside it, which the screen reads, are written from that row afterwards
(`write_files`). A crash between the two leaves the row without its files; `write_files` run
again (provisioning's recovery does, before every stick) finishes it. A ``trusted.pub`` without a
row is a key built into the image (or enrolled before this record existed): trusted all the same.

The key id is the SHA-256 of the key's SubjectPublicKeyInfo (DER), hex: `key_id` is the one rule,
provisioning/keys.py names keys with it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import pem

from ..durable import write_durable
from ..store import audit
from ..store.db import Database

__all__ = ["Trusted", "key_id", "record", "screen_line", "trusted", "trusted_key_path", "write_files"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS provisioning_trust (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    key_id      TEXT NOT NULL,
    public_pem  TEXT NOT NULL,
    how         TEXT NOT NULL,       -- "stick" (trust on first use, with the screen's one-time code) or "operator"
    enrolled_at TEXT NOT NULL
)"""
TRUSTED_KEY = "trusted.pub"
FACTS = "trusted.json"  # for the screen: key id, how, when (no database for root)


@dataclass(frozen=True)
class Trusted:
    key_id: str
    public_pem: str
    how: str
    enrolled_at: str


def key_id(spki_der: bytes) -> str:
    """A provisioning key's name: SHA-256 of its SubjectPublicKeyInfo (DER), hex."""
    return hashlib.sha256(spki_der).hexdigest()


def trusted_key_path(state_dir: Path) -> Path:
    return Path(state_dir) / "provisioning" / TRUSTED_KEY


def _ensure(conn: sqlite3.Connection) -> None:
    conn.execute(_SCHEMA)  # one statement, so it may run inside the caller's transaction


def trusted(db: Database) -> Trusted | None:
    conn = db.connect()
    _ensure(conn)
    row = conn.execute("SELECT * FROM provisioning_trust WHERE id = 1").fetchone()
    return Trusted(row["key_id"], row["public_pem"], row["how"], row["enrolled_at"]) if row else None


def record(conn: sqlite3.Connection, public_pem: bytes, spki_der: bytes, how: str, actor: str,
           details: dict[str, object]) -> Trusted:
    """Trust this key, with its audit entry; inside the caller's `immediate()` transaction.

    The caller decides whether a key may be replaced (a stick may only enrol the first one); this
    writes the row either way and says in the audit entry which key it replaced, if any.
    """
    _ensure(conn)
    old = conn.execute("SELECT key_id FROM provisioning_trust WHERE id = 1").fetchone()
    entry = Trusted(key_id(spki_der), public_pem.decode("ascii"), how, audit.now())
    conn.execute(
        "INSERT INTO provisioning_trust(id, key_id, public_pem, how, enrolled_at) VALUES (1, ?, ?, ?, ?)"
        " ON CONFLICT(id) DO UPDATE SET key_id = excluded.key_id, public_pem = excluded.public_pem,"
        " how = excluded.how, enrolled_at = excluded.enrolled_at",
        (entry.key_id, entry.public_pem, how, entry.enrolled_at))
    audit.append(conn, [audit.AuditEntry(actor, "provision.enroll", None, {
        "key_id": entry.key_id, "how": how, "replaced": old["key_id"] if old else None, **details})])
    return entry


def write_files(state_dir: Path, db: Database) -> bool:
    """Make trusted.pub and trusted.json say what the committed row says; True if they had to change."""
    entry = trusted(db)
    if entry is None:
        return False
    path = trusted_key_path(state_dir)
    facts = json.dumps({"key_id": entry.key_id, "how": entry.how, "enrolled_at": entry.enrolled_at}).encode()
    if path.exists() and path.read_bytes() == entry.public_pem.encode() and (path.parent / FACTS).exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_durable(path.parent / FACTS, facts, mode=0o644)
    write_durable(path, entry.public_pem.encode(), mode=0o644)
    return True


def _facts(state_dir: Path) -> dict[str, str]:
    try:
        facts = json.loads((trusted_key_path(state_dir).parent / FACTS).read_text())
    except (OSError, ValueError):
        return {}
    return facts if isinstance(facts, dict) else {}


def screen_line(state_dir: Path, code_shown: bool) -> str:
    """What the box's screen says about provisioning: the trusted key and where it came from, or none.

    Without a key, it says how to get one: while the screen shows a set-up code, a stick carrying
    the key and that code (provisioning/enrol.py); once an administrator exists, no stick can.
    """
    path = trusted_key_path(state_dir)
    try:
        der = pem.unarmor(path.read_bytes())[2]
    except FileNotFoundError:
        if code_shown:
            return "none — a stick with the administrator's public key and the set-up code below enrols it"
        return "none — sticks are refused; a key must be built into the image or enrolled by an operator"
    except (OSError, ValueError):
        return f"unreadable ({path})"
    shown = key_id(der)[:16]
    facts = _facts(state_dir)
    if facts.get("key_id") != key_id(der):
        return f"{shown}… (built into the image)"
    if facts.get("how") == "stick":
        return f"{shown}… (enrolled from a stick at {facts.get('enrolled_at', '?')[:19]} UTC)"
    return f"{shown}… (enrolled by an operator at {facts.get('enrolled_at', '?')[:19]} UTC)"
