"""The box's application layer: the rules every face (API, CSC, console, CLI, provisioning) calls.

Configuration writes, the live signing service and its hot swap, the key life cycle, console
accounts, and the queries the console and the command line show live here once; the faces call
them and never restate them.

``SigningService`` and ``reassemble`` (module ``live``) and the error table (module ``errors``)
load the signing services, i.e. pyHanko: they are imported when first named, so that the command
line's quick commands (``config get``, ``clients``, ``usage``) start without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from . import accounts, configstore, keys, reports
from .accounts import AccountError, Accounts
from .configstore import ConfigChange
from .generations import HOOK_ENV, Generations, Record, RolledBack, test_hook
from .reports import UsageRow

if TYPE_CHECKING:
    from .errors import FAULTS, Face, Fault
    from .live import SigningService, reassemble

__all__ = [
    "FAULTS", "HOOK_ENV", "AccountError", "Accounts", "ConfigChange", "Face", "Fault", "Generations", "Record",
    "RolledBack", "SigningService", "UsageRow", "accounts", "configstore", "keys", "reassemble", "reports",
    "test_hook",
]

_HEAVY = {"SigningService": "live", "reassemble": "live", "FAULTS": "errors", "Face": "errors", "Fault": "errors"}

__getattr__ = lazy_exports(__name__, _HEAVY)
