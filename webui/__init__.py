"""The LAN-only browser admin console, served by Falcon over the same service layer as the CLI.

`esignbox serve` starts it when box.toml says ``[console] enabled = true``: nginx terminates
HTTPS on the box's LAN-facing addresses (and 127.0.0.1) and proxies to a waitress server on
127.0.0.1 in the same process; the signing API keeps its own listener. See README "Admin
console" for the design: LAN-only allow-list, one-time set-up code instead of a default
password, scrypt, lockouts, idle-expiring sessions, CSRF tokens, Host/Origin checks, strict
security headers, a box-local CA, key rollover inside the running process, and an audit entry
for everything the console does.

Modules: lan (addresses and allow-list), accounts (administrator, set-up code, lockouts),
sessions, app (Falcon app and middleware), pages/ (one per page), charts (SVG), probes (TSA,
OCSP, CRL reachability), tls (box-local CA), nginx (the HTTPS front), signing (the swappable
signing service), server (start-up inside `serve`). box.toml is written through
firmware.operations.configstore and keys are handled by firmware.operations.keys, the same code the command line uses.
"""

from .accounts import set_setup_code

__all__ = ["set_setup_code", "start_console"]


def start_console(box, config, out=print):
    """Start the console for a serving box (see webui.server.start_console)."""
    from .server import start_console as start

    return start(box, config, out)
