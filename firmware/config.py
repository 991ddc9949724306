"""The box's configuration: one TOML file in the state directory.

Everything that differs between a development box and a field box (token module, TSA URLs,
certificate chain) is here, so moving to a YubiHSM2 or a production CA is a config change.
Secrets are never in this file: the token PIN is read from a file or an environment variable.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from hsm import TokenConfig

from .signing.levels import DEFAULT_LEVEL
from .store.storage import MB, StorageBudget

CONFIG_NAME = "box.toml"
STAMP_LOGO_NAME = "stamp-logo.png"  # the stamp logo's file unless [signing] stamp_logo_file names another


class ConfigError(ValueError):
    """The configuration is missing or inconsistent."""


@dataclass(frozen=True)
class TokenSettings:
    module: str
    label: str
    pin_file: Path | None
    pin_env: str | None
    sessions: int
    environment: dict[str, str] = field(default_factory=dict)

    def read_pin(self) -> str:
        if self.pin_env and os.environ.get(self.pin_env):
            return os.environ[self.pin_env]
        if self.pin_file and self.pin_file.exists():
            return self.pin_file.read_text().strip()
        raise ConfigError("token PIN not found: set token.pin_file or token.pin_env")


@dataclass(frozen=True)
class ApiSettings:
    """``[api]``: where the signing API listens, and the limits that keep one client from blocking the others.

    waitress alone holds a connection until ``channel_timeout`` of silence and stops accepting
    once ``connection_limit`` are open, so clients that trickle half a request head would hold
    every slot (firmware/serving.py adds the header timeout and the per-peer cap). The image's
    nginx applies the same numbers per client (image/rootfs/usr/lib/esignbox/nginx-config).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 16  # waitress worker threads
    max_pdf_mb: int = 64
    connection_limit: int = 200  # open connections in all; more wait in the kernel's backlog
    channel_timeout: float = 30.0  # s of silence (between requests, or in a body) before closing
    header_timeout: float = 10.0  # s a request head may take from its first byte (or the accept)
    peer_connection_limit: int = 32  # open connections one address may hold; more are closed at once
    # Not capped per peer: the box itself (its nginx front, which caps per client, and health checks).
    uncapped_peers: tuple[str, ...] = ("127.0.0.1", "::1")

    @property
    def max_pdf_bytes(self) -> int:
        return self.max_pdf_mb * 1024 * 1024

    @property
    def max_request_bytes(self) -> int:
        """The largest request body: a PDF plus 1 MiB for a JSON envelope around it."""
        return self.max_pdf_bytes + 1024 * 1024

    @classmethod
    def from_toml(cls, raw: dict) -> "ApiSettings":
        default = cls()
        peers = raw.get("uncapped_peers", list(default.uncapped_peers))
        return cls(
            host=str(raw.get("host", default.host)),
            port=int(raw.get("port", default.port)),
            threads=int(raw.get("threads", default.threads)),
            max_pdf_mb=int(raw.get("max_pdf_mb", default.max_pdf_mb)),
            connection_limit=int(raw.get("connection_limit", default.connection_limit)),
            channel_timeout=float(raw.get("channel_timeout", default.channel_timeout)),
            header_timeout=float(raw.get("header_timeout", default.header_timeout)),
            peer_connection_limit=int(raw.get("peer_connection_limit", default.peer_connection_limit)),
            uncapped_peers=tuple(str(p) for p in ([peers] if isinstance(peers, str) else peers)),
        )


@dataclass(frozen=True)
class ConsoleSettings:
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

    @classmethod
    def from_toml(cls, raw: dict, resolve) -> "ConsoleSettings":
        def strings(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = raw.get(name, list(default))
            if isinstance(value, str):
                value = [value]
            return tuple(str(v) for v in value)

        return cls(
            enabled=bool(raw.get("enabled", False)),
            port=int(raw.get("port", 8443)),
            listen=strings("listen", ("auto",)),
            allow=strings("allow", ("auto",)),
            names=strings("names", ()),
            session_idle_minutes=float(raw.get("session_idle_minutes", 15)),
            max_failures=int(raw.get("max_failures", 5)),
            lockout_minutes=float(raw.get("lockout_minutes", 10)),
            internal_port=int(raw.get("internal_port", 0)),
            nginx=raw.get("nginx"),
            tls_cert_file=resolve(raw.get("tls_cert_file")),
            tls_key_file=resolve(raw.get("tls_key_file")),
        )


def _inside(state_dir: Path, path: Path, setting: str) -> Path:
    """Files the console may rewrite stay in the state directory."""
    if not path.is_relative_to(state_dir.resolve()):
        raise ConfigError(f"{setting}: {path} is outside the state directory {state_dir}")
    return path


@dataclass(frozen=True)
class OutboundSettings:
    """``[outbound]``: how the box reaches TSAs, OCSP responders and CRL servers.

    ``proxy`` is the organisation's HTTP proxy (http://host:port, credentials allowed in the
    URL); ``no_proxy`` lists hosts reached directly (comma-separated, as curl reads it). Unset,
    the box uses the http_proxy/https_proxy/no_proxy its service was started with, if any.
    """

    proxy: str | None = None
    no_proxy: str | None = None

    @classmethod
    def from_toml(cls, raw: dict) -> "OutboundSettings":
        proxy = raw.get("proxy") or None
        if proxy is not None:
            check_proxy_url(str(proxy))
        no_proxy = raw.get("no_proxy") or None
        return cls(proxy=proxy, no_proxy=None if no_proxy is None else str(no_proxy))


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


@dataclass(frozen=True)
class AuditSettings:
    """``[audit]`` beyond anchoring: summarising refusals without a valid key, and the disk budget."""

    refusal_window_s: float = 60.0  # refusals per peer and reason in one window: one entry + one summary
    budget: StorageBudget = field(default_factory=StorageBudget)

    @classmethod
    def from_toml(cls, raw: dict) -> "AuditSettings":
        default = StorageBudget()
        window_s = float(raw.get("refusal_window_seconds", 60))
        if window_s <= 0:
            raise ConfigError("[audit] refusal_window_seconds must be positive")
        return cls(
            refusal_window_s=window_s,
            budget=StorageBudget(
                max_db_bytes=int(float(raw.get("max_db_mb", default.max_db_bytes / MB)) * MB),
                min_free_bytes=int(float(raw.get("min_free_mb", default.min_free_bytes / MB)) * MB),
            ),
        )


@dataclass(frozen=True)
class BoxConfig:
    state_dir: Path
    api: ApiSettings
    token: TokenSettings
    key_label: str
    chain_file: Path
    trust_roots_file: Path
    prefer_pss: bool
    tsa_urls: list[str]
    pki_port: int | None
    free_calls: int
    anchor_interval_s: float
    max_clock_skew_s: float = 60.0  # [signing] max_clock_skew_seconds: against the TSA's genTime
    default_level: str = DEFAULT_LEVEL.value  # [signing] default_level, set from the admin console
    previous_key_label: str | None = None  # [signing] previous_key_label: written by activation, for rollback-key
    stamp_text: str = ""  # [signing] stamp_text: the default text of a visible PDF stamp
    stamp_background: str = "#eef3f8"  # [signing] stamp_background: the stamp's opaque panel
    stamp_border: str = "#1f3a5f"  # [signing] stamp_border
    stamp_logo_file: Path | None = None  # [signing] stamp_logo_file: PNG in the state dir; None: the default name
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)

    def __post_init__(self) -> None:
        if self.stamp_logo_file is None:
            object.__setattr__(self, "stamp_logo_file", self.state_dir / STAMP_LOGO_NAME)

    @property
    def api_host(self) -> str:
        return self.api.host

    @property
    def api_port(self) -> int:
        return self.api.port

    @property
    def max_pdf_bytes(self) -> int:
        return self.api.max_pdf_bytes

    @property
    def database(self) -> Path:
        return self.state_dir / "box.db"

    def token_config(self) -> TokenConfig:
        # Module-specific settings (SOFTHSM2_CONF, YUBIHSM_PKCS11_CONF) are read by the module
        # from the environment, so they must be set before the module is loaded.
        os.environ.update(self.token.environment)
        return TokenConfig(self.token.module, self.token.label, self.token.read_pin(), self.token.sessions)

    @classmethod
    def load(cls, state_dir: Path) -> "BoxConfig":
        path = state_dir / CONFIG_NAME
        if not path.exists():
            raise ConfigError(f"{path} not found; run `esignbox init-dev` or write it (see README)")
        return cls.from_text(state_dir, path.read_text())

    @classmethod
    def from_text(cls, state_dir: Path, text: str) -> "BoxConfig":
        """What box.toml ``text`` would configure; a change is checked with it before it is written."""
        path = state_dir / CONFIG_NAME
        raw = tomllib.loads(text)

        def resolve(value: str | None) -> Path | None:
            return None if value is None else (state_dir / value).resolve()

        api, token, signing = raw.get("api", {}), raw.get("token", {}), raw.get("signing", {})
        metering, audit = raw.get("metering", {}), raw.get("audit", {})
        try:
            environment = {k: str(resolve(v)) for k, v in token.get("environment_files", {}).items()}
            return cls(
                state_dir=state_dir.resolve(),
                api=ApiSettings.from_toml(api),
                token=TokenSettings(
                    module=token["module"],
                    label=token["label"],
                    pin_file=resolve(token.get("pin_file")),
                    pin_env=token.get("pin_env"),
                    sessions=int(token.get("sessions", 2)),
                    environment=environment,
                ),
                key_label=signing.get("key_label", "box-signing"),
                previous_key_label=signing.get("previous_key_label"),
                chain_file=resolve(signing.get("chain_file", "box-chain.pem")),
                trust_roots_file=resolve(signing.get("trust_roots_file", "trust-roots.pem")),
                prefer_pss=bool(signing.get("prefer_pss", False)),
                tsa_urls=list(signing.get("tsa_urls", [])),
                pki_port=raw.get("dev", {}).get("pki_port"),
                free_calls=int(metering.get("free_calls", 100)),
                anchor_interval_s=float(audit.get("anchor_interval_minutes", 60)) * 60,
                max_clock_skew_s=float(signing.get("max_clock_skew_seconds", 60)),
                default_level=str(signing.get("default_level", DEFAULT_LEVEL.value)),
                stamp_text=str(signing.get("stamp_text", "")),
                stamp_background=str(signing.get("stamp_background", cls.stamp_background)),
                stamp_border=str(signing.get("stamp_border", cls.stamp_border)),
                stamp_logo_file=_inside(state_dir, resolve(signing.get("stamp_logo_file", STAMP_LOGO_NAME)),
                                        "[signing] stamp_logo_file"),
                console=ConsoleSettings.from_toml(raw.get("console", {}), resolve),
                outbound=OutboundSettings.from_toml(raw.get("outbound", {})),
                audit=AuditSettings.from_toml(audit),
            )
        except KeyError as exc:
            raise ConfigError(f"{path}: missing setting {exc}") from exc
