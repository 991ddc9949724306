"""The box's configuration: one TOML file in the state directory, and its one schema.

Everything that differs between a development box and a field box (token module, TSA URLs,
certificate chain, network) is here, so moving to a YubiHSM2 or a production CA is a config change.
Secrets are never in this file: the token PIN is read from a file or an environment variable.

The schema is the section classes below: one frozen dataclass per ``[section]`` whose fields are
the section's keys, with their types and defaults (`SECTIONS`). Every reader goes through it: the
signing service (`BoxConfig.load`), provisioning, the console, and the image's scripts through
`esignbox config get KEY` (`effective_value`), so no default is written down twice. A box.toml
with an unknown section or key, a value of the wrong type or one that breaks a rule (a level the
box does not offer, a TSA URL that is not http(s), a port out of range) is refused at load with
the line and the reason: a typo must stop the box at start, not be ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hsm import TokenConfig

from .signing.levels import DEFAULT_LEVEL, Level
from .store.storage import MB, StorageBudget

__all__ = [
    "CONFIG_NAME", "SECTIONS", "STAMP_LOGO_NAME", "UNTIL_SET_UP", "ApiSettings", "AuditSettings", "BoxConfig", "BoxSettings",
    "ConfigError", "ConsoleSettings", "ContractsSettings", "DevSettings", "DirectorySettings", "InboundSettings", "LdapSettings", "MailSettings", "MeteringSettings", "NetworkSettings", "OutboundSettings",
    "ProvisionedSettings", "RevocationSettings", "SigningSettings", "TokenSettings", "WebhookSettings", "check_http_url",
    "check_proxy_url", "default_value", "effective_value", "is_hostname", "parse", "redacted_url",
]

CONFIG_NAME = "box.toml"
STAMP_LOGO_NAME = "stamp-logo.png"  # the stamp logo's file unless [signing] stamp_logo_file names another
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class ConfigError(ValueError):
    """The configuration is missing or inconsistent."""


class _Section:
    """A section of the schema: a frozen dataclass whose fields are the section's keys."""

    def check(self) -> None:
        """Rules beyond the types (ranges, URLs, levels); raises _Invalid."""


class _Invalid(Exception):
    """A rule a section's values break: ``key`` None means the section as a whole."""

    def __init__(self, key: str | None, reason: str) -> None:
        super().__init__(reason)
        self.key, self.reason = key, reason


def _port(key: str, value: int | None, low: int = 1) -> None:
    if value is not None and not low <= value <= 65535:
        raise _Invalid(key, f"must be a port from {low} to 65535, not {value}")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise _Invalid(key, f"must be positive, not {value}")


def check_http_url(url: str, key: str = "url") -> str:
    """The rule for a TSA, OCSP or CRL URL: http:// or https:// with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid(key, f"must be an http:// or https:// URL, not {url!r}")
    return url


def is_hostname(value: str) -> bool:
    """A DNS host name: dot-separated labels of letters, digits and '-' (box.toml and bundles alike)."""
    return len(value) <= 253 and all(_HOSTNAME_LABEL.match(label) for label in value.rstrip(".").split("."))


def _hostname(key: str, value: str) -> None:
    if not is_hostname(value):
        raise _Invalid(key, f"must be a host name (letters, digits, '-', dot-separated), not {value!r}")


def _ip(key: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _Invalid(key, f"must be an IP address, not {value!r}") from None


@dataclass(frozen=True)
class ApiSettings(_Section):
    """``[api]``: where the signing API listens, and the limits that keep one client from blocking the others.

    waitress alone holds a connection until ``channel_timeout`` of silence and stops accepting
    once ``connection_limit`` are open, so clients that trickle half a request head would hold
    every slot (firmware/serving.py adds the header timeout and the per-peer cap). The image's
    nginx applies the same numbers per client (image/rootfs/usr/lib/esignbox/nginx-config).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    # Processes serving the listener (firmware/workers.py): one per core by default, since one
    # Python process is bound by its GIL well below what the token signs.
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    threads: int = 16  # waitress threads per worker process
    max_pdf_mb: int = 64
    connection_limit: int = 200  # open connections in all; more wait in the kernel's backlog
    channel_timeout: float = 30.0  # s of silence (between requests, or in a body) before closing
    header_timeout: float = 10.0  # s a request head may take from its first byte (or the accept)
    peer_connection_limit: int = 32  # open connections one address may hold; more are closed at once
    # Not capped per peer: the box itself (its nginx front, which caps per client, and health checks).
    uncapped_peers: tuple[str, ...] = ("127.0.0.1", "::1")
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For names the client, for the
    # addresses the envelope trail records (firmware/api/client_ip.py); empty: the TCP peer, always.
    trusted_proxies: tuple[str, ...] = ()

    def check(self) -> None:
        _port("port", self.port)
        for key in ("workers", "threads", "max_pdf_mb", "connection_limit", "peer_connection_limit", "channel_timeout",
                    "header_timeout"):
            _positive(key, getattr(self, key))
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise _Invalid("trusted_proxies", f"must be IP addresses or networks (CIDR), not {proxy!r}") from None

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in self.trusted_proxies)

    @property
    def max_pdf_bytes(self) -> int:
        return self.max_pdf_mb * 1024 * 1024

    @property
    def max_request_bytes(self) -> int:
        """The largest request body: a PDF plus 1 MiB for a JSON envelope around it."""
        return self.max_pdf_bytes + 1024 * 1024


@dataclass(frozen=True)
class TokenSettings(_Section):
    """``[token]``: the PKCS#11 module and token; paths are relative to the state directory."""

    module: str
    label: str
    pin_file: Path | None = None
    pin_env: str | None = None
    sessions: int = 2
    # Environment variables the module reads (SOFTHSM2_CONF, YUBIHSM_PKCS11_CONF), as paths.
    environment_files: dict[str, Path] = field(default_factory=dict)

    def check(self) -> None:
        _positive("sessions", self.sessions)

    @property
    def environment(self) -> dict[str, str]:
        return {name: str(path) for name, path in self.environment_files.items()}

    def read_pin(self) -> str:
        if self.pin_env and os.environ.get(self.pin_env):
            return os.environ[self.pin_env]
        if self.pin_file and self.pin_file.exists():
            return self.pin_file.read_text().strip()
        raise ConfigError("token PIN not found: set token.pin_file or token.pin_env")


@dataclass(frozen=True)
class SigningSettings(_Section):
    """``[signing]``: the signing key, its chain, the TSAs, and what a signature looks like by default."""

    key_label: str = "box-signing"
    previous_key_label: str | None = None  # written by activation, for rollback-key
    chain_file: Path = Path("box-chain.pem")  # leaf first
    trust_roots_file: Path = Path("trust-roots.pem")
    prefer_pss: bool = False
    tsa_urls: tuple[str, ...] = ()  # tried in order
    max_clock_skew_seconds: float = 60.0  # against the TSA's genTime
    default_level: str = DEFAULT_LEVEL.value  # set from the admin console
    stamp_text: str = ""  # the default text of a visible PDF stamp
    stamp_background: str = "#eef3f8"  # the stamp's opaque panel
    stamp_border: str = "#1f3a5f"
    stamp_logo_file: Path = Path(STAMP_LOGO_NAME)  # PNG inside the state directory

    def check(self) -> None:
        if self.default_level not in [level.value for level in Level]:
            raise _Invalid("default_level", f"must be one of {', '.join(level.value for level in Level)},"
                                             f" not {self.default_level!r}")
        for url in self.tsa_urls:
            check_http_url(url, "tsa_urls")
        _positive("max_clock_skew_seconds", self.max_clock_skew_seconds)


@dataclass(frozen=True)
class MeteringSettings(_Section):
    """``[metering]``."""

    free_calls: int = 100  # calls a new API client may make unless it is given a quota

    def check(self) -> None:
        if self.free_calls < 0:
            raise _Invalid("free_calls", "must not be negative")


@dataclass(frozen=True)
class AuditSettings(_Section):
    """``[audit]``: anchoring, summarising refusals without a valid key, and the disk budget."""

    anchor_interval_minutes: float = 60.0  # how often the audit chain's head is timestamped
    refusal_window_seconds: float = 60.0  # refusals per peer and reason in one window: one entry + one summary
    max_db_mb: float = StorageBudget().max_db_bytes / MB
    min_free_mb: float = StorageBudget().min_free_bytes / MB

    def check(self) -> None:
        _positive("anchor_interval_minutes", self.anchor_interval_minutes)
        _positive("refusal_window_seconds", self.refusal_window_seconds)

    @property
    def refusal_window_s(self) -> float:
        return self.refusal_window_seconds

    @property
    def budget(self) -> StorageBudget:
        return StorageBudget(max_db_bytes=int(self.max_db_mb * MB), min_free_bytes=int(self.min_free_mb * MB))


@dataclass(frozen=True)
class DevSettings(_Section):
    """``[dev]``: the development box's PKI servers and mailbox (`esignbox init-dev`, `serve --dev`)."""

    pki_port: int | None = None
    mailbox_port: int | None = None  # the dev mailbox (firmware/devmail.py): an SMTP relay keeping files

    def check(self) -> None:
        _port("pki_port", self.pki_port)
        _port("mailbox_port", self.mailbox_port)


@dataclass(frozen=True)
class ConsoleSettings(_Section):
    """``[console]``: the LAN-only admin console (webui/). Off unless ``enabled = true``."""

    enabled: bool = False
    port: int = 8443  # the HTTPS port nginx listens on
    listen: tuple[str, ...] = ("auto",)  # "auto": the box's LAN-facing addresses; 127.0.0.1 always
    allow: tuple[str, ...] = ("auto",)  # peers allowed: "auto" = own subnets + loopback, or CIDRs
    names: tuple[str, ...] = ()  # extra host names the box answers to (Host/Origin check)
    session_idle_minutes: float = 15.0
    max_failures: int = 5  # failed logins (per peer and per account) before a lockout
    lockout_minutes: float = 10.0
    internal_port: int = 0  # the console's waitress on 127.0.0.1; 0 picks a free port
    nginx: str | None = None  # the nginx binary; None: found on PATH or /usr/sbin/nginx
    tls_cert_file: Path | None = None  # the organisation's certificate chain (PEM), if uploaded
    tls_key_file: Path | None = None

    def check(self) -> None:
        _port("port", self.port)
        _port("internal_port", self.internal_port, low=0)


@dataclass(frozen=True)
class LdapSettings(_Section):
    """``[ldap]``: the certificate directory for mail clients, read-only over LDAP and LDAPS (firmware/ldap/).

    Anonymous searches for exactly one address (``(mail=alice@example.com)``) find its published
    certificates; any other filter finds nothing. A port of 0 turns that protocol off. The LDAPS
    certificate is ``tls_cert_file``/``tls_key_file``, else the console's (the organisation's if
    uploaded, else the one the box made for the console).
    """

    enabled: bool = False
    port: int = 389  # plain LDAP; 0: off
    ldaps_port: int = 636  # LDAP over TLS; 0: off
    listen: tuple[str, ...] = ("0.0.0.0",)  # IP addresses slapd listens on
    size_limit: int = 10  # entries one search returns, and certificates one address's entry carries
    lookups_per_minute: float = 30.0  # per peer address, counted by the directory; more are refused
    tls_cert_file: Path | None = None  # PEM chain, leaf first; None: the console's certificate
    tls_key_file: Path | None = None
    slapd: str | None = None  # the slapd binary; None: found on PATH or /usr/sbin/slapd

    def check(self) -> None:
        _port("port", self.port, low=0)
        _port("ldaps_port", self.ldaps_port, low=0)
        if self.enabled and not (self.port or self.ldaps_port):
            raise _Invalid(None, "port and ldaps_port are both 0: nothing would serve")
        if self.port and self.port == self.ldaps_port:
            raise _Invalid("ldaps_port", f"must differ from port ({self.port})")
        if not self.listen:
            raise _Invalid("listen", "needs at least one address")
        for address in self.listen:
            _ip("listen", address)
        _positive("size_limit", self.size_limit)
        _positive("lookups_per_minute", self.lookups_per_minute)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise _Invalid(None, "tls_cert_file and tls_key_file go together")


@dataclass(frozen=True)
class OutboundSettings(_Section):
    """``[outbound]``: how the box reaches TSAs, OCSP responders and CRL servers.

    ``proxy`` is the organisation's HTTP proxy (http://host:port, credentials allowed in the
    URL); ``no_proxy`` lists hosts reached directly (comma-separated, as curl reads it). Unset,
    the box uses the http_proxy/https_proxy/no_proxy its service was started with, if any.
    """

    proxy: str | None = None
    no_proxy: str | None = None

    def check(self) -> None:
        if self.proxy:
            try:
                check_proxy_url(self.proxy)
            except ConfigError as exc:
                raise _Invalid("proxy", str(exc)) from None


@dataclass(frozen=True)
class BoxSettings(_Section):
    """``[box]``: the box's name, written by provisioning (``box_name``) and shown on its reports."""

    name: str | None = None


@dataclass(frozen=True)
class NetworkSettings(_Section):
    """``[network]``: the box's address on the LAN, applied by `esignbox network apply` (firmware/network.py).

    Unset, the image's default holds: DHCP on every wired interface. Provisioning writes it
    (provisioning/manifest.py ``network``); ``api_host``/``api_port`` of a bundle go to ``[api]``.
    """

    hostname: str | None = None
    mode: str | None = None  # "dhcp" or "static"; None: DHCP, as the image does by default
    address: str | None = None  # with its prefix length, e.g. 192.0.2.10/24 (static only)
    gateway: str | None = None
    dns: tuple[str, ...] = ()  # IP addresses of name servers
    ntp: tuple[str, ...] = ()  # time servers, names or addresses

    def check(self) -> None:
        if self.hostname is not None:
            _hostname("hostname", self.hostname)
        if self.mode not in (None, "dhcp", "static"):
            raise _Invalid("mode", f'must be "dhcp" or "static", not {self.mode!r}')
        if self.address is not None:
            try:
                ipaddress.ip_interface(self.address)
            except ValueError:
                raise _Invalid("address", f"must be an address with prefix length, e.g. 192.0.2.10/24,"
                                          f" not {self.address!r}") from None
            if "/" not in self.address:
                raise _Invalid("address", f"needs its prefix length, e.g. {self.address}/24")
        if self.gateway is not None:
            _ip("gateway", self.gateway)
        if self.mode == "static" and self.address is None:
            raise _Invalid(None, "a static configuration needs an address")
        if self.mode != "static" and (self.address or self.gateway):
            raise _Invalid(None, 'an address or gateway needs mode = "static"')
        for server in self.dns:
            _ip("dns", server)
        for server in self.ntp:
            try:
                _ip("ntp", server)
            except _Invalid:
                _hostname("ntp", server)


@dataclass(frozen=True)
class RevocationSettings(_Section):
    """``[revocation]``: where the box gets revocation data for its certificates (firmware/signing/revocation.py).

    Set, these are asked instead of the OCSP responders and CRL distribution points the
    certificates name: for a box whose network reaches the CA only through an internal mirror.
    """

    ocsp_urls: tuple[str, ...] = ()
    crl_urls: tuple[str, ...] = ()

    def check(self) -> None:
        for key in ("ocsp_urls", "crl_urls"):
            for url in getattr(self, key):
                check_http_url(url, key)


_MAIL_ADDRESS = re.compile(r"^[^@\s<>,;:\"()\[\]\\]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+$")


@dataclass(frozen=True)
class MailSettings(_Section):
    """``[mail]``: the SMTP relay POST /v1/mail delivers through (firmware/mail/), and the notice sent
    instead to a recipient without an encryption certificate. No ``relay_host``: no mail (503).

    The relay's password is read from ``password_file`` (relative to the state directory), never
    from box.toml. A relay outage is retried ``max_attempts`` times, the first after
    ``retry_seconds``, each wait twice the one before up to ``max_retry_seconds``.
    """

    relay_host: str | None = None
    relay_port: int = 25
    starttls: bool = True  # STARTTLS before anything else; the relay's certificate is verified
    relay_ca_file: Path | None = None  # the CA of the relay's certificate; None: the system's
    username: str | None = None  # AUTH; needs password_file
    password_file: Path | None = None
    timeout_seconds: float = 30.0  # per connection and SMTP command
    from_address: str | None = None  # From: and MAIL FROM; needed with relay_host
    notice_subject: str = "How to receive encrypted mail from us"
    notice_text: str = ("We have a message for you that we send only encrypted, and we have no e-mail encryption"
                        " (S/MIME) certificate for your address yet. Please send us your certificate to"
                        " receive it.")
    max_attempts: int = 8
    retry_seconds: float = 30.0
    max_retry_seconds: float = 3600.0
    # The token key mail is signed with, its chain in chains/<label>.pem (esignbox keygen, csr and
    # import-chain --label, as for the signing key); None: the signing key and its chain.
    key_label: str | None = None

    def check(self) -> None:
        _port("relay_port", self.relay_port)
        for key in ("timeout_seconds", "max_attempts", "retry_seconds", "max_retry_seconds"):
            _positive(key, getattr(self, key))
        if self.relay_host is not None:
            try:
                _ip("relay_host", self.relay_host)
            except _Invalid:
                _hostname("relay_host", self.relay_host)
            if self.from_address is None:
                raise _Invalid("from_address", "is needed to send mail (relay_host is set)")
        if self.from_address is not None and not _MAIL_ADDRESS.match(self.from_address):
            raise _Invalid("from_address", f"must be one e-mail address (local@domain), not {self.from_address!r}")
        if (self.username is None) != (self.password_file is None):
            raise _Invalid(None, "username and password_file go together")
        if "\n" in self.notice_subject or "\r" in self.notice_subject:
            raise _Invalid("notice_subject", "must be one line")


@dataclass(frozen=True)
class DirectorySettings(_Section):
    """``[directory]``: the certificate directory of people's e-mail encryption certificates
    (firmware/directory/). Off unless ``enabled = true``.

    A certificate is kept only if it chains to ``trust_roots_file`` (PEM; the CAs whose S/MIME
    certificates the organisation accepts, not necessarily the box's own), and published only after
    its owner follows the link (or types the code) the box mails, encrypted, to it; the link starts
    with ``public_base_url``, the address under which the organisation's reverse proxy publishes
    the box's API listener. Lookups are limited per API client and per looked-up address.
    """

    enabled: bool = False
    trust_roots_file: Path = Path("directory-roots.pem")
    lookups_per_minute_per_client: int = 60
    lookups_per_minute_per_address: int = 20
    proof_lifetime_minutes: float = 1440.0  # how long a mailed link or code stays usable
    proof_max_attempts: int = 5  # wrong codes before a proof is used up
    proofs_per_hour_per_address: int = 3  # confirmation mails (submit, unpublish) one address may get
    public_base_url: str | None = None  # e.g. https://certificates.example.org; None: the code only

    def check(self) -> None:
        for key in ("lookups_per_minute_per_client", "lookups_per_minute_per_address", "proof_lifetime_minutes",
                    "proof_max_attempts", "proofs_per_hour_per_address"):
            _positive(key, getattr(self, key))
        if self.public_base_url is not None:
            check_http_url(self.public_base_url, "public_base_url")

    @property
    def proof_lifetime_s(self) -> float:
        return self.proof_lifetime_minutes * 60


@dataclass(frozen=True)
class InboundSettings(_Section):
    """``[inbound]``: the SMTP listener people send a signed e-mail to, so the certificate directory
    gets their certificate the way mail clients share it (firmware/inbound/). Off unless enabled;
    needs ``[directory]`` enabled. The organisation routes ``address`` to the box (MX or transport
    rule); only RCPT to it is accepted. STARTTLS uses ``tls_cert_file``/``tls_key_file``, else the
    console's certificate (firmware/lan_tls.py).
    """

    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = 2525  # the image forwards port 25 here; an unprivileged service cannot bind 25
    address: str | None = None  # the directory's address, e.g. certificates@box.example.org
    max_message_kb: int = 1024  # larger messages are refused by the server (552)
    require_starttls: bool = False
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def check(self) -> None:
        _ip("host", self.host)
        _port("port", self.port)
        _positive("max_message_kb", self.max_message_kb)
        if self.enabled and not self.address:
            raise _Invalid("address", "the directory's e-mail address is needed when enabled")
        if self.address is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", self.address):
            raise _Invalid("address", f"must be an e-mail address, not {self.address!r}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise _Invalid(None, "tls_cert_file and tls_key_file go together")


@dataclass(frozen=True)
class WebhookSettings(_Section):
    """``[webhooks]``: how contract events reach the business system's URL (firmware/webhooks/).

    A delivery that fails (no answer within ``timeout_seconds``, or anything but a 2xx) is retried
    up to ``max_attempts`` times in all, the first retry after ``retry_seconds``, each wait twice the
    one before up to ``max_retry_seconds``; then the event is given up and audited.
    """

    timeout_seconds: float = 10.0  # per connection and per read of the answer
    max_attempts: int = 10
    # Posting to the box's own loopback addresses: a dev box's and tests' receivers (firmware/webhooks/urls.py).
    allow_loopback: bool = False
    retry_seconds: float = 30.0
    max_retry_seconds: float = 3600.0

    def check(self) -> None:
        for key in ("timeout_seconds", "max_attempts", "retry_seconds", "max_retry_seconds"):
            _positive(key, getattr(self, key))


@dataclass(frozen=True)
class ContractsSettings(_Section):
    """``[contracts]``: envelopes with several parties (firmware/contracts/). Off unless enabled.

    Each party's signature is made on the token by a key of its own, certified for minutes by the
    box's signer CA (``signer_ca_label``, its chain in chains/<label>.pem through the key life
    cycle). Invitation links start with ``public_base_url``, where the organisation's reverse
    proxy publishes the signing page of the API listener; without it the API hands out the bare tokens.
    """

    enabled: bool = False
    signer_ca_label: str = "signer-ca"
    public_base_url: str | None = None  # e.g. https://sign.example.org
    organisation: str = "E-signature Box"  # shown on the completion certificate
    default_expiry_days: int = 14
    max_expiry_days: int = 90
    max_access_attempts: int = 5  # wrong access codes before a party is locked out

    def check(self) -> None:
        for key in ("default_expiry_days", "max_expiry_days", "max_access_attempts"):
            _positive(key, getattr(self, key))
        if self.default_expiry_days > self.max_expiry_days:
            raise _Invalid("default_expiry_days", "must not exceed max_expiry_days")
        if self.public_base_url is not None:
            check_http_url(self.public_base_url, "public_base_url")


@dataclass(frozen=True)
class ProvisionedSettings(_Section):
    """``[provisioned]``: which bundle made this configuration generation (provisioning/apply.py). Read-only."""

    generation: int | None = None
    counter: int | None = None
    bundle: str | None = None  # the bundle's digest
    key_id: str | None = None  # the provisioning key that signed it
    applied_at: str | None = None


# Sections a box.toml may leave out while the box is not set up (firmware/operations/setup.py): the
# token is chosen in the console's set-up; once the section is there, its settings are required.
UNTIL_SET_UP = frozenset({"token"})

SECTIONS: dict[str, type] = {
    "api": ApiSettings, "token": TokenSettings, "signing": SigningSettings, "metering": MeteringSettings,
    "audit": AuditSettings, "dev": DevSettings, "console": ConsoleSettings, "outbound": OutboundSettings,
    "box": BoxSettings, "network": NetworkSettings, "revocation": RevocationSettings, "ldap": LdapSettings, "mail": MailSettings,
    "provisioned": ProvisionedSettings, "directory": DirectorySettings, "inbound": InboundSettings, "webhooks": WebhookSettings,
    "contracts": ContractsSettings,
}


def redacted_url(url: str | None) -> str:
    """``url`` as people may see it (console, audit log, rollback report): a password becomes ****."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:****@{host}"))


def check_proxy_url(url: str) -> str:
    """The one rule for a proxy setting, for box.toml and the console alike."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"[outbound] proxy must be an http(s)://host:port URL, not {url!r}")
    return url


# -- reading a section through the schema ---------------------------------------------------------

_CONVERT: dict[type, Callable[[Any], Any]] = {float: float, Path: Path}  # TOML has integers for floats, text for paths
_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text", Path: "a path (text)"}


def _scalar(kind: type, value: Any, key: str) -> Any:
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float) if kind is float else
                                                                   str if kind is Path else kind):
        raise _Invalid(key, f"must be {_TYPE_NAMES[kind]}, not {value!r}")
    convert: Callable[[Any], Any] | None = _CONVERT.get(kind)
    return value if convert is None else convert(value)


def _typed(hint: Any, value: Any, key: str) -> Any:
    """``value`` from TOML as the field's type says, or _Invalid."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise _Invalid(key, f"must be a list of {_TYPE_NAMES[args[0]]}, not {value!r}")
        return tuple(_scalar(args[0], item, key) for item in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Invalid(key, f"must be a table of {_TYPE_NAMES[args[1]]}, not {value!r}")
        return {str(name): _scalar(args[1], item, f"{key}.{name}") for name, item in value.items()}
    return _scalar(args[0] if args else hint, value, key)


def _resolved(value: Any, state_dir: Path) -> Any:
    """Paths in box.toml are relative to the state directory."""
    if isinstance(value, Path):
        return (state_dir / value).resolve()
    if isinstance(value, dict):
        return {name: _resolved(item, state_dir) for name, item in value.items()}
    return value


def _section(cls: type, raw: dict[str, Any], state_dir: Path) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise _Invalid(key, f"unknown setting (known: {', '.join(fields)})")
    values = {}
    for name, spec in fields.items():
        if name in raw:
            values[name] = _typed(hints[name], raw[name], name)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise _Invalid(name, "missing setting (it has no default)")
    section = cls(**values)
    section = dataclasses.replace(section, **{
        name: _resolved(getattr(section, name), state_dir) for name in fields})
    section.check()
    return section


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """The line of ``key`` in ``[section]`` (or of the section's header), where it can be found."""
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]", line)
        if header:
            current = header.group(1)
            if key is None and current == section:
                return number
        elif key is not None and current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return None


def parse(text: str, path: Path = Path(CONFIG_NAME)) -> dict[str, Any]:
    """box.toml's settings as written, unchecked and without defaults: what a change is merged into
    (firmware/operations/configstore.py). Refused only if it is no TOML at all."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _sections(path: Path, text: str, state_dir: Path) -> Iterator[tuple[str, Any]]:
    raw = parse(text, path)
    for name in raw:
        if name not in SECTIONS:
            line = _line_of(text, name, None)
            where = f", line {line}" if line else ""
            raise ConfigError(f"{path}{where}: [{name}]: unknown section (known: {', '.join(SECTIONS)})")
    for name, cls in SECTIONS.items():
        if name in UNTIL_SET_UP and name not in raw:
            yield name, None
            continue
        values = raw.get(name, {})
        try:
            if not isinstance(values, dict):
                raise _Invalid(None, "must be a table")
            yield name, _section(cls, values, state_dir)
        except _Invalid as exc:
            section, key = (f"{name}.{exc.key.split('.')[0]}", exc.key.split(".", 1)[1]) \
                if exc.key and "." in exc.key else (name, exc.key)
            line = _line_of(text, section, key) or _line_of(text, name, None)
            where = f", line {line}" if line else ""
            raise ConfigError(f"{path}{where}: [{name}]{' ' + exc.key if exc.key else ''}: {exc.reason}") from None


@dataclass(frozen=True)
class BoxConfig:
    """Every section of box.toml, checked, with the defaults applied; paths resolved in the state directory."""

    state_dir: Path
    api: ApiSettings
    token: TokenSettings | None  # None: no [token] yet, the box is not set up
    signing: SigningSettings
    metering: MeteringSettings
    audit: AuditSettings
    dev: DevSettings
    console: ConsoleSettings
    outbound: OutboundSettings
    box: BoxSettings
    network: NetworkSettings
    revocation: RevocationSettings
    ldap: LdapSettings
    mail: MailSettings
    provisioned: ProvisionedSettings
    directory: DirectorySettings = field(default_factory=DirectorySettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    contracts: ContractsSettings = field(default_factory=ContractsSettings)

    def __post_init__(self) -> None:
        for face in ("ldap", "inbound"):
            if getattr(self, face).enabled and not self.directory.enabled:
                raise ConfigError(f"[{face}] enabled needs [directory] enabled: it serves the certificate directory")
        if not self.signing.stamp_logo_file.is_relative_to(self.state_dir):  # the console may rewrite it
            raise ConfigError(f"[signing] stamp_logo_file: {self.signing.stamp_logo_file} is outside the state"
                              f" directory {self.state_dir}")

    # The settings by the names the services have always used.
    @property
    def key_label(self) -> str:
        return self.signing.key_label

    @property
    def previous_key_label(self) -> str | None:
        return self.signing.previous_key_label

    @property
    def chain_file(self) -> Path:
        return self.signing.chain_file

    @property
    def trust_roots_file(self) -> Path:
        return self.signing.trust_roots_file

    @property
    def prefer_pss(self) -> bool:
        return self.signing.prefer_pss

    @property
    def tsa_urls(self) -> list[str]:
        return list(self.signing.tsa_urls)

    @property
    def max_clock_skew_s(self) -> float:
        return self.signing.max_clock_skew_seconds

    @property
    def default_level(self) -> str:
        return self.signing.default_level

    @property
    def stamp_text(self) -> str:
        return self.signing.stamp_text

    @property
    def stamp_background(self) -> str:
        return self.signing.stamp_background

    @property
    def stamp_border(self) -> str:
        return self.signing.stamp_border

    @property
    def stamp_logo_file(self) -> Path:
        return self.signing.stamp_logo_file

    @property
    def free_calls(self) -> int:
        return self.metering.free_calls

    @property
    def pki_port(self) -> int | None:
        return self.dev.pki_port

    @property
    def anchor_interval_s(self) -> float:
        return self.audit.anchor_interval_minutes * 60

    @property
    def api_host(self) -> str:
        return self.api.host

    @property
    def api_port(self) -> int:
        return self.api.port

    def serving_on(self, host: str, port: int) -> BoxConfig:
        """This configuration as served on ``host``:``port`` (``serve --host/--port``): what the box
        derives from its listener (the signer CA's CRL address without public_base_url) must name
        the one in force, not box.toml's."""
        return dataclasses.replace(self, api=dataclasses.replace(self.api, host=host, port=port))

    @property
    def max_pdf_bytes(self) -> int:
        return self.api.max_pdf_bytes

    @property
    def database(self) -> Path:
        return self.state_dir / "box.db"

    def token_config(self) -> TokenConfig:
        # Module-specific settings (SOFTHSM2_CONF, YUBIHSM_PKCS11_CONF) are read by the module
        # from the environment, so they must be set before the module is loaded.
        if self.token is None:
            raise ConfigError(f"{self.state_dir / CONFIG_NAME} names no token ([token]): the box is not set up yet;"
                              " finish the set-up in the admin console or with a provisioning stick")
        os.environ.update(self.token.environment)
        return TokenConfig(self.token.module, self.token.label, self.token.read_pin(), self.token.sessions)

    @classmethod
    def load(cls, state_dir: Path) -> BoxConfig:
        path = state_dir / CONFIG_NAME
        if not path.exists():
            raise ConfigError(f"{path} not found; run `esignbox init-dev` or write it (see README)")
        return cls.from_text(state_dir, path.read_text())

    @classmethod
    def from_text(cls, state_dir: Path, text: str) -> BoxConfig:
        """What box.toml ``text`` would configure; a change is checked with it before it is written."""
        resolved = state_dir.resolve()
        return cls(state_dir=resolved, **dict(_sections(state_dir / CONFIG_NAME, text, resolved)))


# -- one setting by name, for `esignbox config get` and the image's scripts -----------------------

def _split(key: str) -> tuple[type, str, str]:
    section, _, name = key.partition(".")
    cls = SECTIONS.get(section)
    known = cls is not None and (name in {f.name for f in dataclasses.fields(cls)}
                                 or isinstance(getattr(cls, name, None), property))
    if cls is None or not known:
        raise ConfigError(f"no setting {key!r} in box.toml; settings are SECTION.KEY, sections:"
                          f" {', '.join(SECTIONS)}")
    return cls, section, name


def default_value(key: str, state_dir: Path = Path(".")) -> Any:
    """The value ``key`` ("api.port") has when box.toml does not set it."""
    cls, section, name = _split(key)
    spec = {f.name: f for f in dataclasses.fields(cls)}.get(name)
    if spec is None:  # a value derived from the section's settings, e.g. api.max_request_bytes
        try:
            return getattr(_section(cls, {}, state_dir.resolve()), name)
        except _Invalid:
            raise ConfigError(f"{key} has no default: box.toml must set [{section}]") from None
    if spec.default is not dataclasses.MISSING:
        return _resolved(spec.default, state_dir.resolve())
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    raise ConfigError(f"{key} has no default: box.toml must set it")


def effective_value(state_dir: Path, key: str) -> Any:
    """The value of ``key`` in force: box.toml's (checked as at start), else the default."""
    _, section, name = _split(key)
    if not (state_dir / CONFIG_NAME).exists():
        return default_value(key, state_dir)
    settings = getattr(BoxConfig.load(state_dir), section)
    return default_value(key, state_dir) if settings is None else getattr(settings, name)
