"""The LAN-only browser admin console, served by Falcon over the same service layer as the CLI.

`esignbox serve` starts it when box.toml says ``[console] enabled = true``: nginx terminates
HTTPS on the box's LAN-facing addresses (and 127.0.0.1) and proxies to a waitress server on
127.0.0.1 in the same process; the signing API keeps its own listener. See README "Admin
console" for the design: LAN-only allow-list, one-time set-up code instead of a default
password, scrypt, lockouts, idle-expiring sessions, CSRF tokens, Host/Origin checks, strict
security headers, a box-local CA, key rollover inside the running process, and an audit entry
for everything the console does.

Modules: lan (addresses and allow-list), sessions, console (what the pages share), app (Falcon
app and middleware), pages/ (one per page), charts (SVG), probes (TSA, OCSP, CRL reachability),
tls (box-local CA), nginx (the HTTPS front), server (start-up inside `serve`). The rules are the
application layer's, the same code the command line and provisioning use: box.toml through
firmware.operations.configstore, keys through firmware.operations.keys, the administrator account
through firmware.operations.accounts, usage and audit through firmware.operations.reports, the
swappable signing service in firmware.operations.live.
"""

from .server import ConsoleError, start_console

__all__ = ["ConsoleError", "start_console"]
