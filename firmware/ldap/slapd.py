"""slapd as the box's LDAP server: its configuration, and the process that lives and dies with the box.

Debian's slapd speaks LDAP and LDAPS (TLS with the box's certificate), binds clients anonymously,
applies size and time limits and refuses writes; its sock backend hands each search on
``dc=esignbox`` to the box's `Responder`, which alone knows the published certificates. The
configuration is written to ``<state>/ldap/slapd.conf`` at every start from ``[ldap]``; slapd
runs in the foreground as a child that gets SIGTERM when the box dies (firmware/children.py).
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from ..children import dies_with_this_process, end
from ..config import BoxConfig, LdapSettings
from ..lan_tls import tls_files
from .responder import SUFFIX, LdapError, PublishedCertificates, Responder

__all__ = ["LdapServer", "render_conf", "urls"]

log = logging.getLogger(__name__)

DIRECTORY = "ldap"  # under the state directory
CONF, SOCKET, LOG, PID = "slapd.conf", "responder.sock", "slapd.log", "slapd.pid"
# The console's own certificate (webui/tls.py writes it; firmware does not import the console).
SCHEMAS = ("core", "cosine", "inetorgperson")  # mail, userCertificate, userSMIMECertificate
MODULE_PATH = Path("/usr/lib/ldap")  # back_sock.so, in Debian's slapd package
_START_TIMEOUT = 10.0
_LOG_TAIL = 2000


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def urls(settings: LdapSettings) -> list[str]:
    """slapd's ``-h`` listeners: each address with the LDAP and the LDAPS port that are not 0."""
    found = []
    for address in settings.listen:
        if settings.port:
            found.append(f"ldap://{_host(address)}:{settings.port}/")
        if settings.ldaps_port:
            found.append(f"ldaps://{_host(address)}:{settings.ldaps_port}/")
    return found


def _quoted(path: Path) -> str:
    text = str(path)
    if any(c in text for c in '"\\\n'):
        raise LdapError(f"slapd.conf cannot name the path {text!r}")
    return f'"{text}"'


def render_conf(settings: LdapSettings, directory: Path, tls: tuple[Path, Path] | None) -> str:
    """slapd.conf: schemas, limits, TLS, and one read-only sock database that forwards to the box."""
    lines = ["# Written by the E-signature Box at each start from [ldap] in box.toml; edits are lost.",
             *(f"include {_quoted(Path('/etc/ldap/schema') / f'{name}.schema')}" for name in SCHEMAS),
             f"modulepath {_quoted(MODULE_PATH)}",
             "moduleload back_sock.so",
             f"pidfile {_quoted(directory / PID)}",
             f"argsfile {_quoted(directory / 'slapd.args')}",
             "loglevel none",
             # Anonymous reads only: no binds with a password, no SASL without the box's say.
             "disallow bind_simple",
             "require none",
             # Limits for everyone (there is no root DN): entries per search, seconds per search,
             # bytes per request, idle connections, requests queued per connection.
             f"sizelimit {settings.size_limit}",
             "timelimit 5",
             "sockbuf_max_incoming 8192",
             "idletimeout 30",
             "conn_max_pending 8",
             "threads 4"]
    if tls is not None:
        lines += [f"TLSCertificateFile {_quoted(tls[0])}",
                  f"TLSCertificateKeyFile {_quoted(tls[1])}",
                  "TLSProtocolMin 3.3"]  # TLS 1.2 and later
    lines += ["",
              "database sock",
              f'suffix "{SUFFIX}"',
              f"socketpath {_quoted(directory / SOCKET)}",
              "extensions peername",  # the client's address, for the rate limit
              "readonly on",
              "access to * by * read"]
    return "\n".join(lines) + "\n"


def _slapd_binary(settings: LdapSettings) -> str:
    binary = settings.slapd or shutil.which("slapd") or "/usr/sbin/slapd"
    if not Path(binary).exists():
        raise LdapError(f"slapd not found ({binary}): install Debian's slapd package, or set [ldap] slapd")
    return binary


class LdapServer:
    """slapd and the responder it forwards to, started and stopped together."""

    def __init__(self, config: BoxConfig, published: PublishedCertificates) -> None:
        self.settings = config.ldap
        self.directory = config.state_dir / DIRECTORY
        self.tls = tls_files(config, config.ldap.tls_cert_file, config.ldap.tls_key_file)
        if self.settings.ldaps_port and self.tls is None:
            raise LdapError("LDAPS needs the box's TLS certificate: start the console once, or set [ldap]"
                            " tls_cert_file and tls_key_file (or ldaps_port = 0)")
        self.responder = Responder(self.directory / SOCKET, published, self.settings.size_limit)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        """Start the responder, then slapd; return once slapd accepts on every port."""
        binary = _slapd_binary(self.settings)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.directory / CONF).write_text(render_conf(self.settings, self.directory, self.tls))
        self.responder.start()
        self._log = (self.directory / LOG).open("wb")
        command = [binary, "-d", "0", "-h", " ".join(urls(self.settings)), "-f", str(self.directory / CONF)]
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log,
                                             stderr=subprocess.STDOUT, preexec_fn=dies_with_this_process())
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        log.info("LDAP directory serving on %s", " ".join(urls(self.settings)))

    @property
    def pid(self) -> int | None:
        """slapd's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def _probe_addresses(self) -> list[tuple[str, int]]:
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}
        return [(wildcard.get(address, address), port) for address in self.settings.listen
                for port in (self.settings.port, self.settings.ldaps_port) if port]

    def _wait_until_serving(self) -> None:
        assert self._process is not None  # started by the caller
        waiting = self._probe_addresses()
        deadline = time.monotonic() + _START_TIMEOUT
        while waiting:
            if self._process.poll() is not None:
                raise LdapError(f"slapd exited ({self._process.returncode}): {self._log_tail()}")
            if time.monotonic() > deadline:
                raise LdapError(f"slapd did not listen on {waiting} within {_START_TIMEOUT:g} s: {self._log_tail()}")
            try:
                with socket.create_connection(waiting[0], timeout=0.5):
                    waiting.pop(0)
            except OSError:
                time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return (self.directory / LOG).read_bytes()[-_LOG_TAIL:].decode("utf-8", "replace").strip()
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop slapd and the responder; safe to call twice."""
        if self._process is not None:
            end(self._process)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.responder.stop()

    def __enter__(self) -> LdapServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
