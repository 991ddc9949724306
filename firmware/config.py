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

from hsm import TokenConfig

CONFIG_NAME = "box.toml"


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
    default_level: str = "B-T"  # [signing] default_level, set from the admin console
    stamp_text: str = ""  # [signing] stamp_text: the default text of a visible PDF stamp
    console: ConsoleSettings = field(default_factory=ConsoleSettings)

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
        raw = tomllib.loads(path.read_text())

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
                chain_file=resolve(signing.get("chain_file", "box-chain.pem")),
                trust_roots_file=resolve(signing.get("trust_roots_file", "trust-roots.pem")),
                prefer_pss=bool(signing.get("prefer_pss", False)),
                tsa_urls=list(signing.get("tsa_urls", [])),
                pki_port=raw.get("dev", {}).get("pki_port"),
                free_calls=int(metering.get("free_calls", 100)),
                anchor_interval_s=float(audit.get("anchor_interval_minutes", 60)) * 60,
                default_level=str(signing.get("default_level", "B-T")),
                stamp_text=str(signing.get("stamp_text", "")),
                console=ConsoleSettings.from_toml(raw.get("console", {}), resolve),
            )
        except KeyError as exc:
            raise ConfigError(f"{path}: missing setting {exc}") from exc
