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
class BoxConfig:
    state_dir: Path
    api_host: str
    api_port: int
    threads: int
    max_pdf_bytes: int
    token: TokenSettings
    key_label: str
    chain_file: Path
    trust_roots_file: Path
    prefer_pss: bool
    tsa_urls: list[str]
    pki_port: int | None
    free_calls: int
    anchor_interval_s: float

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
                api_host=api.get("host", "127.0.0.1"),
                api_port=int(api.get("port", 8080)),
                threads=int(api.get("threads", 16)),
                max_pdf_bytes=int(api.get("max_pdf_mb", 64)) * 1024 * 1024,
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
            )
        except KeyError as exc:
            raise ConfigError(f"{path}: missing setting {exc}") from exc
