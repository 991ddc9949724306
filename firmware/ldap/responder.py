"""The box's side of slapd's sock backend: a Unix socket that answers each forwarded search.

slapd(8) speaks LDAP and LDAPS to the mail clients and hands every operation on ``dc=esignbox``
to this socket as text (slapd-sock(5)): a command line (``SEARCH``, ``BIND``, ``UNBIND``, …),
``key: value`` lines, a blank line. slapd has already parsed and re-rendered the filter, so
``filter:`` is in canonical form: attribute names as the schema spells them (``MAIL=`` arrives as
``mail=``), special characters in values escaped as ``\\XX``. The answer is LDIF entries, each
followed by a blank line, then ``RESULT`` / ``code:`` / ``info:``; slapd picks the attributes the
client asked for and sends them on.

Only one question is answered: a filter that is exactly one equality on ``mail`` with a plain
address, i.e. a mail client looking up a recipient. Everything else (substrings, presence,
``(objectClass=*)``, compound filters, other attributes) finds nothing, with success, so a
directory cannot be listed or guessed at by pattern. Every search, answered or not, is first
counted against the peer's rate (`PublishedCertificates.allow`); a peer over it is refused with
adminLimitExceeded.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import socket
import socketserver
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

__all__ = [
    "BRANCH", "SUFFIX", "LdapError", "PublishedCertificates", "Request", "Responder", "answer", "exact_address",
    "parse_request", "peer_address",
]

log = logging.getLogger(__name__)

SUFFIX = "dc=esignbox"
BRANCH = f"ou=directory,{SUFFIX}"  # every entry is mail=<address>,ou=directory,dc=esignbox

# LDAP result codes (RFC 4511) the responder gives.
SUCCESS, ADMIN_LIMIT_EXCEEDED, INVALID_CREDENTIALS, UNWILLING_TO_PERFORM = 0, 11, 49, 53

_MAX_REQUEST = 64 * 1024  # slapd limits an anonymous request to 256 KiB; a search is far smaller
_TIMEOUT = 5.0  # s slapd may take to send a request
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL

# One equality on mail, as slapd renders it: no '*' (substrings/presence), no nesting.
_EQUALITY = re.compile(r"\(mail=((?:[^*()\\\x00]|\\[0-9A-Fa-f]{2})+)\)", re.IGNORECASE)
_ESCAPE = re.compile(rb"\\([0-9A-Fa-f]{2})")
_OR = re.compile(r"\(\|((?:\([^()]*\))+)\)")
_CLAUSE = re.compile(r"\([^()]*\)")
MAX_ADDRESSES = 20  # recipients one OR search may ask for; each counts against the peer's rate
# A plain address: printable ASCII (mail is an IA5String) without spaces, LDAP filter characters
# or quoting; one '@'; a host name or address literal after it. Wider forms are refused, not guessed at.
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_DN_SPECIAL = re.compile(r'([,+"\\<>;=#])')


class LdapError(RuntimeError):
    """The LDAP service cannot start (slapd missing or failing, a socket path too long, no TLS files)."""


class PublishedCertificates(Protocol):
    """What the LDAP face asks of the certificate directory."""

    def lookup(self, address: str) -> list[bytes]:
        """DER certificates published for exactly this address (normalised by the directory), newest
        first; [] for an unknown, pending or refused one: they look the same."""

    def allow(self, peer: str) -> bool:
        """Count one lookup from ``peer`` (an IP address); False once it is over its rate."""


@dataclass(frozen=True)
class Request:
    """One operation slapd forwards: its command and its ``key: value`` lines (the first of each key)."""

    command: str
    fields: dict[str, str]

    def get(self, key: str) -> str:
        return self.fields.get(key, "")


def parse_request(data: bytes) -> Request:
    lines = data.decode("utf-8", "replace").split("\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            break
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.lstrip(" "))
    return Request(lines[0].strip().upper(), fields)


def peer_address(peername: str) -> str:
    """The client's IP address from back-sock's ``peername`` (``IP=192.0.2.7:51234``, ``IP=[2001:db8::7]:51234``)."""
    if not peername.startswith("IP="):
        return peername  # PATH=… for ldapi://, which the box does not listen on; counted as given
    host = peername[3:]
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] or host


def exact_address(filter_text: str) -> str | None:
    """The address of a filter that is exactly ``(mail=<plain address>)``, else None."""
    match = _EQUALITY.fullmatch(filter_text.strip())
    if match is None:
        return None
    try:
        value = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), match[1].encode("utf-8")).decode("ascii")
    except UnicodeDecodeError:
        return None
    return value if len(value) <= 254 and _ADDRESS.fullmatch(value) else None


def exact_addresses(filter_text: str) -> list[str]:
    """The addresses of a filter that is one exact ``(mail=…)`` or an OR of at most
    ``MAX_ADDRESSES`` of them (Thunderbird asks for all recipients lacking a certificate in one
    search); anything else — wildcards, other attributes, AND, NOT — gives none."""
    text = filter_text.strip()
    single = exact_address(text)
    if single is not None:
        return [single]
    match = _OR.fullmatch(text)
    if match is None:
        return []
    clauses = _CLAUSE.findall(match[1])
    if "".join(clauses) != match[1] or len(clauses) > MAX_ADDRESSES:
        return []
    addresses = [exact_address(clause) for clause in clauses]
    if any(address is None for address in addresses):
        return []
    return list(dict.fromkeys(a for a in addresses if a is not None))


def _in_scope(base: str, scope: str) -> bool:
    """Whether entries under ``ou=directory`` are within the search's base and scope (slapd leaves that to the backend)."""
    normal = re.sub(r"\s*([,=])\s*", r"\1", base.strip()).lower()
    if scope == "2" or scope == "3":  # subtree, children
        return normal in (SUFFIX, BRANCH)
    if scope == "1":  # one level
        return normal == BRANCH
    return False  # base: the entries are found by mail, not read by DN


def _ldif_line(attribute: str, value: bytes) -> str:
    """``attribute:: base64`` folded at 76 columns (slapd reads a line of more than 8 KiB in two halves)."""
    text = f"{attribute}:: {base64.b64encode(value).decode()}"
    return "\n ".join(text[i:i + 76] for i in range(0, len(text), 76))


def smime_value(der: bytes) -> bytes:
    """``userSMIMECertificate``: RFC 2798 makes it a PKCS#7 SignedData carrying the certificate (what Outlook reads)."""
    return pkcs7.serialize_certificates([x509.load_der_x509_certificate(der)], Encoding.DER)


def _entry(address: str, certificates: list[bytes]) -> str:
    rdn_value = _DN_SPECIAL.sub(r"\\\1", address)  # RFC 4514 escaping
    lines = [f"dn: mail={rdn_value},{BRANCH}", "objectClass: inetOrgPerson",
             f"cn: {address}", f"sn: {address}", f"mail: {address}"]
    # Thunderbird asks for userCertificate;binary (a DER certificate per value); Outlook first for
    # userSMIMECertificate (a PKCS#7 per value; its syntax is Binary, which OpenLDAP serves without
    # the ;binary option), then userCertificate.
    lines += [_ldif_line("userCertificate;binary", der) for der in certificates]
    for der in certificates:
        try:
            lines.append(_ldif_line("userSMIMECertificate", smime_value(der)))
        except ValueError:
            log.warning("LDAP: a published certificate for %s does not parse; userSMIMECertificate left out", address)
    return "\n".join(lines) + "\n\n"


def _result(code: int, info: str = "") -> str:
    return f"RESULT\ncode: {code}\n" + (f"info: {info}\n" if info else "")


def answer(request: Request, published: PublishedCertificates, size_limit: int) -> str | None:
    """The text to send back to slapd for ``request`` (None: nothing, as for UNBIND)."""
    if request.command == "UNBIND":
        return None
    if request.command == "BIND":  # anonymous binds never get here; a bind with a password is refused
        return _result(INVALID_CREDENTIALS, "the directory is read anonymously")
    if request.command != "SEARCH":
        return _result(UNWILLING_TO_PERFORM, "the directory is read-only and answers searches by mail only")
    peer = peer_address(request.get("peername"))
    addresses = exact_addresses(request.get("filter"))
    # Every address asked for is one lookup against the peer's rate; a search that can find
    # nothing still counts once, so that probing costs as much as asking.
    for _ in range(max(len(addresses), 1)):
        if not published.allow(peer):
            return _result(ADMIN_LIMIT_EXCEEDED, "too many lookups from this address; try again later")
    if not _in_scope(request.get("base"), request.get("scope")):
        return _result(SUCCESS)
    entries, budget = [], size_limit
    for address in addresses:
        certificates = published.lookup(address)[:budget]
        if certificates:
            entries.append(_entry(address, certificates))
            budget -= len(certificates)
        if budget <= 0:
            break
    return "".join(entries) + _result(SUCCESS)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        connection: socket.socket = self.request
        connection.settimeout(_TIMEOUT)
        data = b""
        with contextlib.suppress(OSError):
            while b"\n\n" not in data and len(data) < _MAX_REQUEST:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                data += chunk
        try:
            reply = answer(parse_request(data), self.server.published, self.server.size_limit)
        except Exception:  # the directory failed: slapd tells the client, the box logs it
            log.exception("LDAP: answering %s failed", data.split(b"\n", 1)[0][:20])
            reply = _result(80, "the directory is unavailable")  # LDAP_OTHER
        if reply is not None:
            with contextlib.suppress(OSError):  # slapd gone (client abandoned): nothing to tell
                connection.sendall(reply.encode("utf-8"))


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, published: PublishedCertificates, size_limit: int) -> None:
        self.published, self.size_limit = published, size_limit
        super().__init__(str(path), _Handler)


class Responder:
    """The Unix socket slapd's sock backend forwards to, served by a thread of the box."""

    def __init__(self, path: Path, published: PublishedCertificates, size_limit: int) -> None:
        if len(os.fsencode(path)) > _UNIX_PATH_MAX:
            raise LdapError(f"the LDAP socket path {path} is longer than {_UNIX_PATH_MAX} bytes")
        self.path, self.published, self.size_limit = path, published, size_limit
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # left by a box that was killed
        old = os.umask(0o177)  # the socket is the box's and slapd's (its child, same user): 0600
        try:
            self._server = _Server(self.path, self.published, self.size_limit)
        finally:
            os.umask(old)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ldap-responder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Responder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
