"""[network] of box.toml rendered as systemd-networkd/timesyncd files (firmware/network.py), and `esignbox network apply`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from firmware import network
from firmware.config import BoxConfig

from .support import ESIGNBOX

TOKEN = '[token]\nmodule = "m.so"\nlabel = "t"\n'
STATIC = ('[network]\nhostname = "esign-hq"\nmode = "static"\naddress = "192.0.2.10/24"\ngateway = "192.0.2.1"\n'
          'dns = ["192.0.2.53", "192.0.2.54"]\nntp = ["ntp.example", "192.0.2.123"]\n')


def settings(tmp_path: Path, text: str):
    (tmp_path / "box.toml").write_text(TOKEN + text)
    return BoxConfig.load(tmp_path).network


def test_static_address_gateway_dns_and_ntp(tmp_path: Path):
    files = network.render(settings(tmp_path, STATIC))
    lines = files[network.NETWORK_FILE].splitlines()
    assert lines[lines.index("[Match]") + 1] == "Name=en* eth*"
    body = lines[lines.index("[Network]") + 1:]
    assert body[:4] == ["Address=192.0.2.10/24", "Gateway=192.0.2.1", "DNS=192.0.2.53", "DNS=192.0.2.54"]
    assert "DHCP=yes" not in body
    assert files[network.TIMESYNCD_FILE].splitlines()[-2:] == ["[Time]", "NTP=ntp.example 192.0.2.123"]


def test_dhcp_keeps_the_dhcp_hostname_out_when_one_is_set(tmp_path: Path):
    files = network.render(settings(tmp_path, '[network]\nmode = "dhcp"\nhostname = "esign-hq"\n'))
    text = files[network.NETWORK_FILE]
    assert "DHCP=yes" in text and "Address=" not in text and "UseHostname=no" in text
    assert network.TIMESYNCD_FILE not in files


def test_no_network_section_leaves_the_image_default_and_removes_old_files(tmp_path: Path):
    run = tmp_path / "run"
    names: list[str] = []
    done = network.apply(settings(tmp_path, STATIC), run, names.append)
    assert (run / network.NETWORK_FILE).read_text() == network.render(settings(tmp_path, STATIC))[network.NETWORK_FILE]
    assert names == ["esign-hq"] and len(done) == 3
    assert network.render(settings(tmp_path, "")) == {}
    network.apply(settings(tmp_path, ""), run, names.append)
    assert not (run / network.NETWORK_FILE).exists() and not (run / network.TIMESYNCD_FILE).exists()
    assert names == ["esign-hq"]  # no host name in box.toml: the image's stays


def test_esignbox_network_apply_writes_the_files(tmp_path: Path):
    (tmp_path / "box.toml").write_text(TOKEN + STATIC.replace('hostname = "esign-hq"\n', ""))
    result = subprocess.run([ESIGNBOX, "--state-dir", str(tmp_path), "network", "apply", "--run-dir",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Address=192.0.2.10/24" in (tmp_path / "run" / network.NETWORK_FILE).read_text()
