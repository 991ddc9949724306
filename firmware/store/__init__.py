"""Durable state in SQLite: API clients, metering, the audit log and the record of every signature.

Faces and services import from here; ``audit`` and ``metering`` are modules of functions that run
inside a caller's transaction, and ``clients`` holds the writes provisioning makes in its own.
"""

from . import audit, clients, metering
from .clients import Client, ClientError, ClientRegistry
from .db import Database, immediate, open_connection
from .metering import DEFAULT_SCOPES, SCOPES
from .storage import MB, StorageBudget, StorageFull, StorageState

__all__ = [
    "DEFAULT_SCOPES", "MB", "SCOPES", "Client", "ClientError", "ClientRegistry", "Database", "StorageBudget",
    "StorageFull", "StorageState", "audit", "clients", "immediate", "metering", "open_connection",
]
