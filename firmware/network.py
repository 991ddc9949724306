"""[box]/[network] of box.toml made real: systemd-networkd and timesyncd files, and the host name.

The image's root is read-only, so the files go under /run, where systemd reads them too and a
name sorting before the image's own 20-wired.network (DHCP on every wired interface) wins.
esignbox-network.service runs `esignbox network apply` at boot, before systemd-networkd: a
bundle's network settings take effect at the next boot, and a box.toml without [network] keeps
the image's default (the files of an earlier [network] are removed).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from .config import NetworkSettings
from .durable import write_durable

__all__ = ["NETWORK_FILE", "TIMESYNCD_FILE", "apply", "render"]

NETWORK_FILE = Path("systemd/network/10-esignbox.network")
TIMESYNCD_FILE = Path("systemd/timesyncd.conf.d/50-esignbox.conf")
_SOURCE = "# Written by `esignbox network apply` (esignbox-network.service) from [network] in box.toml.\n"


def render(network: NetworkSettings) -> dict[Path, str]:
    """The files for ``network``, by path under /run; none for what [network] leaves to the image."""
    files: dict[Path, str] = {}
    if network.mode is not None or network.dns:
        lines = [_SOURCE, "[Match]", "Name=en* eth*", "", "[Network]"]
        if network.mode == "static":
            lines += [f"Address={network.address}"] + ([f"Gateway={network.gateway}"] if network.gateway else [])
        else:
            lines += ["DHCP=yes", "LinkLocalAddressing=yes"]
        lines += [f"DNS={server}" for server in network.dns] + ["MulticastDNS=yes"]
        if network.mode != "static":
            lines += ["", "[DHCPv4]", "UseDomains=yes"] + (["UseHostname=no"] if network.hostname else [])
        files[NETWORK_FILE] = "\n".join(lines) + "\n"
    if network.ntp:
        files[TIMESYNCD_FILE] = f"{_SOURCE}[Time]\nNTP={' '.join(network.ntp)}\n"
    return files


def apply(network: NetworkSettings, run_dir: Path = Path("/run"),
          set_hostname: Callable[[str], None] = socket.sethostname) -> list[str]:
    """Write (or remove) the files under ``run_dir`` and set the host name; what was done, for people."""
    files = render(network)
    done = []
    for relative in (NETWORK_FILE, TIMESYNCD_FILE):
        path = run_dir / relative
        if relative in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_durable(path, files[relative].encode())
            done.append(f"wrote {path}")
        elif path.exists():
            path.unlink()
            done.append(f"removed {path}: the image's default applies")
    if network.hostname:
        set_hostname(network.hostname)
        done.append(f"host name {network.hostname}")
    return done
