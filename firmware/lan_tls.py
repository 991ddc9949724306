"""Which certificate the box shows on the LAN: one rule for the console, LDAPS and SMTP STARTTLS.

The organisation's certificate when ``[console]`` names one that is there, else the one the box
made for its console under ``console/tls/`` (webui/tls.py writes it). A face with files of its own
in its section (``[ldap]``, ``[inbound]``) uses those first.
"""

from __future__ import annotations

from pathlib import Path

from .config import BoxConfig

__all__ = ["BOX_TLS_DIR", "BOX_TLS_FILES", "tls_files"]

BOX_TLS_DIR = Path("console") / "tls"  # under the state directory
BOX_TLS_FILES = ("console.pem", "console.key")  # the box-made certificate chain and key there


def tls_files(config: BoxConfig, own_cert: Path | None = None, own_key: Path | None = None) -> tuple[Path, Path] | None:
    """The certificate chain and key a LAN face serves with, or None if there is none yet."""
    made = config.state_dir / BOX_TLS_DIR
    for cert, key in ((own_cert, own_key), (config.console.tls_cert_file, config.console.tls_key_file),
                      (made / BOX_TLS_FILES[0], made / BOX_TLS_FILES[1])):
        if cert is not None and key is not None and cert.exists() and key.exists():
            return cert, key
    return None
