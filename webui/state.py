"""The console's audit helper: every change the console makes is an audit entry.

Its tables (administrators, set-up code, lockouts, sessions) belong to
firmware.operations.accounts, which provisioning uses too.
"""

from __future__ import annotations

from typing import Any

from firmware.store import Database, audit


def record(db: Database, actor: str, action: str, details: dict[str, Any], client_id: str | None = None) -> int:
    """Append one entry in a transaction of its own (for changes outside this database)."""
    return audit.record(db.connect(), audit.AuditEntry(actor, action, client_id, details))
