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
from . import accounts, box_state, configstore, keys, reports, setup, tokens
from .accounts import AccountError, Accounts
from .configstore import ConfigChange
from .generations import HOOK_ENV, Generations, Record, RolledBack, test_hook
from .keys import (
    KEY_ALGORITHMS,
    KeyExists,
    KeyNotFound,
    TokenError,
    activation,
    build_csr,
    chain_details,
    chain_path,
    generate,
    install_chain,
    inventory,
    parse_subject,
    rollback_activation,
    token_presence,
)
from .keys import LABEL as KEY_LABEL
from .reports import UsageRow
from .setup import Progress, SetUp, Step, current_config, is_set_up

if TYPE_CHECKING:
    from .errors import FAULTS, Face, Fault
    from .live import SigningService, reassemble

__all__ = [
    "FAULTS", "HOOK_ENV", "KEY_ALGORITHMS", "KEY_LABEL", "AccountError", "Accounts", "ConfigChange", "Face", "Fault",
    "Generations", "KeyExists", "KeyNotFound", "Progress", "Record", "RolledBack", "SetUp", "SigningService", "Step",
    "TokenError", "UsageRow", "accounts", "activation", "box_state", "build_csr", "chain_details", "chain_path", "configstore",
    "current_config", "generate", "install_chain", "inventory", "is_set_up", "keys", "parse_subject", "reassemble",
    "reports", "rollback_activation", "setup", "test_hook", "token_presence", "tokens",
]

_HEAVY = {"SigningService": "live", "reassemble": "live", "FAULTS": "errors", "Face": "errors", "Fault": "errors"}

__getattr__ = lazy_exports(__name__, _HEAVY)
