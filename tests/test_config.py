"""box.toml's one schema (firmware/config.py): every section, its defaults, and what is refused at load."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from firmware.config import SECTIONS, BoxConfig, ConfigError, default_value, effective_value

from .support import ESIGNBOX

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = '[token]\nmodule = "m.so"\nlabel = "t"\n'


def load(tmp_path: Path, text: str) -> BoxConfig:
    (tmp_path / "box.toml").write_text(text)
    return BoxConfig.load(tmp_path)


def test_every_section_has_defaults(tmp_path: Path):
    config = load(tmp_path, MINIMAL)
    assert config.free_calls == 100 and config.api.port == 8080 and config.default_level == "B-T"
    assert config.box.name is None and config.network.mode is None and config.network.dns == ()
    assert config.revocation.ocsp_urls == () and config.revocation.crl_urls == ()
    assert config.provisioned.generation is None
    assert config.chain_file == tmp_path.resolve() / "box-chain.pem"


def test_sections_provisioning_writes_are_read(tmp_path: Path):
    config = load(tmp_path, MINIMAL + '[box]\nname = "hq"\n'
                  '[network]\nhostname = "esign-hq"\nmode = "static"\naddress = "192.0.2.10/24"\n'
                  'gateway = "192.0.2.1"\ndns = ["192.0.2.53"]\nntp = ["ntp.example"]\n'
                  '[revocation]\nocsp_urls = ["http://ocsp.example"]\ncrl_urls = ["http://crl.example/ca.crl"]\n'
                  '[provisioned]\ngeneration = 3\ncounter = 7\nbundle = "ab"\nkey_id = "cd"\n'
                  'applied_at = "2025-11-26T10:00:00+00:00"\n')
    assert config.box.name == "hq"
    assert (config.network.hostname, config.network.mode, config.network.address, config.network.gateway) == (
        "esign-hq", "static", "192.0.2.10/24", "192.0.2.1")
    assert config.network.dns == ("192.0.2.53",) and config.network.ntp == ("ntp.example",)
    assert config.revocation.ocsp_urls == ("http://ocsp.example",)
    assert config.provisioned.generation == 3 and config.provisioned.counter == 7


@pytest.mark.parametrize("extra, line, reason", [
    ('[signing]\ndefault_level = "B-X"\n', 5, "default_level"),
    ('[signing]\ntsa_urls = ["ftp://tsa.example"]\n', 5, "http"),
    ('[api]\nport = "8080"\n', 5, "whole number"),
    ('[api]\nport = 70000\n', 5, "1"),
    ('[api]\nprot = 8080\n', 5, "unknown setting"),
    ('[apl]\nport = 8080\n', 4, "unknown section"),
    ('[console]\nenabled = "yes"\n', 5, "true or false"),
    ('[network]\nmode = "static"\n', 4, "address"),
    ('[network]\naddress = "192.0.2.300/24"\n', 5, "address"),
    ('[network]\nhostname = "bad_name!"\n', 5, "host name"),
    ('[revocation]\nocsp_urls = "http://ocsp.example"\n', 5, "list"),
])
def test_invalid_settings_are_refused_with_line_and_reason(tmp_path: Path, extra: str, line: int, reason: str):
    with pytest.raises(ConfigError, match=reason) as caught:
        load(tmp_path, MINIMAL + extra)
    assert f"line {line}" in str(caught.value) and "box.toml" in str(caught.value)


def test_missing_and_unparsable(tmp_path: Path):
    with pytest.raises(ConfigError, match="module: missing setting"):
        load(tmp_path, '[token]\nlabel = "t"\n')
    with pytest.raises(ConfigError, match="line 2"):
        load(tmp_path, '[api]\nport = = 1\n')


def test_effective_value_applies_defaults(tmp_path: Path):
    assert default_value("metering.free_calls") == 100
    assert default_value("api.max_request_bytes") == 65 * 1024 * 1024  # derived settings too
    (tmp_path / "box.toml").write_text(MINIMAL + "[api]\nport = 9000\n")
    assert effective_value(tmp_path, "api.port") == 9000
    assert effective_value(tmp_path, "api.host") == "127.0.0.1"
    assert effective_value(tmp_path / "nowhere", "api.port") == 8080  # no box.toml yet: the defaults
    for key in ("api.nothing", "nothing.port", "port"):
        with pytest.raises(ConfigError, match="no setting"):
            effective_value(tmp_path, key)
    with pytest.raises(ConfigError, match="no default"):
        effective_value(tmp_path / "nowhere", "token.module")


def test_esignbox_config_get_prints_the_values_in_force(tmp_path: Path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ESIGNBOX, "--state-dir", str(tmp_path), "config", "get", *args],
                              capture_output=True, text=True, timeout=60)

    (tmp_path / "box.toml").write_text(MINIMAL + '[api]\nport = 9000\n[console]\nenabled = true\n')
    result = run("api.port", "metering.free_calls", "console.enabled", "api.uncapped_peers", "network.hostname")
    assert result.returncode == 0 and result.stdout == "9000\n100\ntrue\n127.0.0.1 ::1\n\n", result.stderr
    assert run("--default", "api.port").stdout == "8080\n"
    (tmp_path / "box.toml").write_text(MINIMAL + '[signing]\ndefault_level = "B-Q"\n')
    result = run("api.port")
    assert result.returncode == 1 and "line 5" in result.stderr and "default_level" in result.stderr


def test_the_readme_configuration_example_is_a_valid_box_toml_covering_every_section(tmp_path):
    """The README's box.toml is what a new operator copies: it must load, and leave no section out."""
    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```toml\n(.*?)```", section, re.S)
    assert example, "README.md's Configuration section has no toml block"
    BoxConfig.from_text(tmp_path, example[1])
    shown = set(re.findall(r"^\[([a-z_]+)\]", example[1], re.M))
    assert set(SECTIONS) - shown == {"provisioned"}  # written by provisioning only; described in prose


@pytest.mark.parametrize("face", ["ldap", "inbound"])
def test_a_directory_face_needs_the_directory(tmp_path, face):
    extra = 'address = "certificates@box.example.org"\n' if face == "inbound" else ""
    with pytest.raises(ConfigError, match=rf"\[{face}\] enabled needs \[directory\] enabled"):
        BoxConfig.from_text(tmp_path, f'[token]\nmodule = "m.so"\nlabel = "t"\n[{face}]\nenabled = true\n{extra}')
