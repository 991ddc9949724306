"""The certificate directory over LDAP/LDAPS: real slapd (Debian's, sock backend) asked by real
`ldapsearch` (ldap-utils), answered by the box's responder.

The directory itself is another part of the box; here a small stand-in over dicts plays it
(`Published`): published certificates by normalised address, pending ones that must not be
found, and a per-peer lookup budget for the rate limit.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.config import BoxConfig, ConfigError
from firmware.lan_tls import tls_files
from firmware.ldap import LdapError, LdapServer, render_conf
from firmware.ldap.responder import MAX_ADDRESSES, exact_address, exact_addresses, peer_address
from tests.support import free_port

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/slapd").exists() or not Path("/usr/bin/ldapsearch").exists(),
                                reason="needs Debian's slapd and ldap-utils (make system-deps)")

NOW = dt.datetime.now(dt.UTC)
BASE = "dc=esignbox"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer_key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None = None,
          key: ec.EllipticCurvePrivateKey | None = None,
          extensions: tuple[x509.ExtensionType, ...] = ()) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer or _name(subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(hours=1)).not_valid_after(NOW + dt.timedelta(days=30)))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _mail_cert(address: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    cert, _ = _cert(address, key, key=key, extensions=(
        x509.SubjectAlternativeName([x509.RFC822Name(address)]),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION])))
    return cert.public_bytes(serialization.Encoding.DER)


class Published:
    """Stand-in for the certificate directory: the PublishedCertificates seam over dicts."""

    def __init__(self) -> None:
        self.published: dict[str, list[bytes]] = {}
        self.pending: dict[str, list[bytes]] = {}  # submitted, mailbox not yet proven: never found
        self.lookups: Counter[str] = Counter()
        self.budget: int | None = None  # lookups per peer; None: unlimited
        self.asked: list[str] = []

    def lookup(self, address: str) -> list[bytes]:
        self.asked.append(address)
        return list(self.published.get(address.strip().lower(), []))

    def allow(self, peer: str) -> bool:
        self.lookups[peer] += 1
        return self.budget is None or self.lookups[peer] <= self.budget


class Running:
    def __init__(self, state: Path, ports: tuple[int, int], published: Published, ca: Path) -> None:
        self.state, self.published, self.ca = state, published, ca
        self.port, self.ldaps_port = ports


@pytest.fixture(scope="module")
def ldap(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("ldap")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca, _ = _cert("test CA", ca_key, key=ca_key, extensions=(x509.BasicConstraints(ca=True, path_length=0),))
    leaf, leaf_key = _cert("127.0.0.1", ca_key, issuer=ca.subject, extensions=(
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),))
    (state / "tls").mkdir()
    (state / "tls" / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (state / "tls" / "ldap.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                                             + ca.public_bytes(serialization.Encoding.PEM))
    (state / "tls" / "ldap.key").write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(state / "tls" / "ldap.key", 0o600)
    ports = free_port(), free_port()
    config = BoxConfig.from_text(state, f"""
[token]
module = "/nonexistent.so"
label = "test"

[directory]
enabled = true

[ldap]
enabled = true
port = {ports[0]}
ldaps_port = {ports[1]}
listen = ["127.0.0.1"]
size_limit = 2
tls_cert_file = "tls/ldap.pem"
tls_key_file = "tls/ldap.key"
""")
    published = Published()
    published.published["alice@example.com"] = [_mail_cert("alice@example.com")]
    published.published["bob@example.com"] = [_mail_cert("bob@example.com") for _ in range(3)]
    published.pending["carol@example.com"] = [_mail_cert("carol@example.com")]
    with LdapServer(config, published):
        yield Running(state, ports, published, state / "tls" / "ca.pem")


def _search(ldap: Running, filter_text: str, *attrs: str, url: str | None = None, base: str = BASE,
            extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LDAPTLS_CACERT": str(ldap.ca)}  # the test CA: the server's certificate is checked
    return subprocess.run(["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no",
                           "-H", url or f"ldap://127.0.0.1:{ldap.port}", "-b", base, *extra, filter_text, *attrs],
                          capture_output=True, text=True, env=env, timeout=30)


def _values(ldif: str, attribute: str) -> list[bytes]:
    prefix = f"{attribute}:: ".lower()
    return [base64.b64decode(line[len(prefix):]) for line in ldif.splitlines() if line.lower().startswith(prefix)]


def test_a_published_certificate_is_found_by_mail(ldap: Running):
    result = _search(ldap, "(mail=alice@example.com)", "userCertificate;binary")
    assert result.returncode == 0, result.stderr
    assert "dn: mail=alice@example.com,ou=directory,dc=esignbox" in result.stdout
    assert _values(result.stdout, "userCertificate;binary") == ldap.published.published["alice@example.com"]


def test_outlook_s_attribute_is_a_pkcs7_with_the_certificate(ldap: Running):
    """Outlook reads userSMIMECertificate first (RFC 2798: PKCS#7 SignedData), then userCertificate.
    Its syntax is Binary, which OpenLDAP serves without the ;binary option."""
    result = _search(ldap, "(mail=alice@example.com)", "userSMIMECertificate", "mail")
    assert result.returncode == 0, result.stderr
    [smime] = _values(result.stdout, "userSMIMECertificate")
    [cert] = pkcs7.load_der_pkcs7_certificates(smime)
    assert cert.public_bytes(serialization.Encoding.DER) == ldap.published.published["alice@example.com"][0]
    assert "mail: alice@example.com" in result.stdout


def test_over_ldaps_with_the_box_certificate(ldap: Running):
    result = _search(ldap, "(mail=alice@example.com)", "userCertificate;binary",
                     url=f"ldaps://127.0.0.1:{ldap.ldaps_port}")
    assert result.returncode == 0, result.stderr
    assert _values(result.stdout, "userCertificate;binary") == ldap.published.published["alice@example.com"]


def test_the_attribute_name_is_case_insensitive_and_the_directory_normalises(ldap: Running):
    result = _search(ldap, "(MAIL=Alice@Example.COM)", "userCertificate;binary")
    assert result.returncode == 0, result.stderr
    assert _values(result.stdout, "userCertificate;binary") == ldap.published.published["alice@example.com"]


@pytest.mark.parametrize("address", ["carol@example.com", "nobody@example.com"])
def test_pending_and_unknown_addresses_find_nothing(ldap: Running, address: str):
    result = _search(ldap, f"(mail={address})")
    assert result.returncode == 0 and result.stdout.strip() == "", (result.stdout, result.stderr)


@pytest.mark.parametrize("filter_text", [
    "(mail=*)", "(mail=ali*)", "(mail=*@example.com)", "(objectClass=*)", "(mail~=alice@example.com)",
    "(mail>=a)", "(mail:caseExactIA5Match:=alice@example.com)", "(cn=alice@example.com)",
    "(|(mail=alice@example.com)(mail=*))", "(|(mail=alice@example.com)(cn=bob))",
    "(&(mail=alice@example.com)(objectClass=*))", "(|(mail=alice@example.com)(&(mail=bob@example.com)))",
    "(!(mail=nobody@example.com))", r"(mail=alice\2a)", "(mail=alice)",
])
def test_anything_but_one_exact_mail_equality_finds_nothing(ldap: Running, filter_text: str):
    result = _search(ldap, filter_text)
    assert result.returncode == 0 and result.stdout.strip() == "", (filter_text, result.stdout, result.stderr)


def test_an_or_of_exact_addresses_finds_each_as_thunderbird_asks_for_several_recipients(ldap: Running):
    before = ldap.published.lookups["127.0.0.1"]
    result = _search(ldap, "(|(mail=alice@example.com)(mail=nobody@example.com)(mail=bob@example.com))", "mail")
    assert result.returncode == 0, result.stderr
    found = sorted(line for line in result.stdout.splitlines() if line.startswith("mail:"))
    assert found == sorted(f"mail: {a}" for a in ("alice@example.com", "bob@example.com")
                           if a in ldap.published.published), result.stdout
    assert ldap.published.lookups["127.0.0.1"] - before == 3  # each address counts against the rate
    too_many = "(|" + "".join(f"(mail=u{i}@example.com)" for i in range(MAX_ADDRESSES + 1)) + ")"
    assert _search(ldap, too_many).stdout.strip() == ""


def test_entries_are_found_under_the_directory_by_mail_not_read_by_dn(ldap: Running):
    for base, scope in [("mail=alice@example.com,ou=directory,dc=esignbox", "base"), (BASE, "base")]:
        result = _search(ldap, "(mail=alice@example.com)", base=base, extra=("-s", scope))
        assert result.stdout.strip() == "", (base, scope, result.stdout)
    for base, scope in [("ou=directory, dc=esignbox", "one"), ("OU=Directory,DC=esignbox", "sub")]:
        result = _search(ldap, "(mail=alice@example.com)", "mail", base=base, extra=("-s", scope))
        assert "mail: alice@example.com" in result.stdout, (base, scope, result.stdout, result.stderr)


def test_the_size_limit_caps_what_one_address_returns(ldap: Running):
    assert "sizelimit 2" in (ldap.state / "ldap" / "slapd.conf").read_text()
    result = _search(ldap, "(mail=bob@example.com)", "userCertificate;binary")
    assert result.returncode == 0, result.stderr
    assert _values(result.stdout, "userCertificate;binary") == ldap.published.published["bob@example.com"][:2]


def test_a_peer_over_its_rate_is_refused(ldap: Running):
    ldap.published.budget = ldap.published.lookups["127.0.0.1"]  # the next lookup is one too many
    try:
        for filter_text in ("(mail=alice@example.com)", "(mail=*)"):
            result = _search(ldap, filter_text, "userCertificate;binary")
            assert result.returncode == 11 and result.stdout.strip() == "", (result.returncode, result.stdout)
            assert "too many lookups" in result.stderr
    finally:
        ldap.published.budget = None
    assert _search(ldap, "(mail=alice@example.com)").stdout.strip()


def test_writes_compares_and_password_binds_are_refused(ldap: Running):
    url = f"ldap://127.0.0.1:{ldap.port}"
    entry = "dn: mail=eve@example.com,ou=directory,dc=esignbox\nobjectClass: inetOrgPerson\ncn: e\nsn: e\n"
    added = subprocess.run(["ldapadd", "-x", "-H", url], input=entry, capture_output=True, text=True, timeout=30)
    assert added.returncode != 0
    bound = subprocess.run(["ldapwhoami", "-x", "-H", url, "-D", "mail=alice@example.com,ou=directory,dc=esignbox",
                            "-w", "secret"], capture_output=True, text=True, timeout=30)
    assert bound.returncode != 0
    compared = subprocess.run(["ldapcompare", "-x", "-H", url, "mail=alice@example.com,ou=directory,dc=esignbox",
                               "mail:alice@example.com"], capture_output=True, text=True, timeout=30)
    assert compared.returncode == 53, (compared.returncode, compared.stdout, compared.stderr)  # unwillingToPerform
    assert "eve@example.com" not in ldap.published.asked


_BOX = """
import sys, time
from pathlib import Path
from firmware.config import BoxConfig
from firmware.ldap import LdapServer

class Nothing:
    def lookup(self, address): return []
    def allow(self, peer): return True

server = LdapServer(BoxConfig.from_text(Path(sys.argv[1]), sys.argv[2]), Nothing())
server.start()
print(server.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()  # a zombie has ended
    except FileNotFoundError:
        return True


def test_slapd_ends_with_the_box_even_on_kill_9(tmp_path: Path):
    port = free_port()
    toml = f'[token]\nmodule = "m.so"\nlabel = "t"\n\n[directory]\nenabled = true\n\n[ldap]\nenabled = true\nport = {port}\nldaps_port = 0\n' \
           f'listen = ["127.0.0.1"]\n'
    box = subprocess.Popen([sys.executable, "-c", _BOX, str(tmp_path), toml], stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parent.parent)
    try:
        assert box.stdout is not None
        pid = int(box.stdout.readline())
        assert not _gone(pid)
        box.kill()  # SIGKILL: no handler runs in the box
        box.wait()
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), "slapd outlived the box"
    finally:
        if box.poll() is None:
            box.kill()
            box.wait()


def test_only_the_exact_address_reaches_the_directory():
    assert exact_address("(mail=alice@example.com)") == "alice@example.com"
    assert exact_address(r"(mail=o\27brien@example.com)") == "o'brien@example.com"
    for refused in ("(mail=*)", "(mail=a*b@x)", r"(mail=a\2ab@x)", "(mail=a b@x)", "(?mail=\\C3\\A4@x)",
                    "(mail=a@b)(mail=c@d)", "(mail=@x)", "(mail=a@)", "(mail=a@@x)", r"(mail=a\00@x)"):
        assert exact_address(refused) is None, refused
    assert exact_addresses("(|(mail=a@x.org)(MAIL=b@x.org)(mail=a@x.org))") == ["a@x.org", "b@x.org"]
    assert exact_addresses("(|(mail=a@x.org)(mail=b*))") == [] and exact_addresses("(|(mail=a@x.org)x)") == []
    assert peer_address("IP=192.0.2.7:51234") == "192.0.2.7"
    assert peer_address("IP=[2001:db8::7]:51234") == "2001:db8::7"


def _config(tmp_path: Path, ldap_section: str) -> BoxConfig:
    return BoxConfig.from_text(tmp_path, f'[token]\nmodule = "m.so"\nlabel = "t"\n\n[directory]\nenabled = true\n\n'
                                         f'[ldap]\n{ldap_section}\n')


@pytest.mark.parametrize("section, reason", [
    ("port = 70000", "port"), ("enabled = true\nport = 0\nldaps_port = 0", "both 0"),
    ("port = 1389\nldaps_port = 1389", "must differ"), ('listen = ["lan"]', "IP address"),
    ("size_limit = 0", "positive"), ('tls_cert_file = "x.pem"', "go together"),
])
def test_ldap_settings_are_checked(tmp_path: Path, section: str, reason: str):
    with pytest.raises(ConfigError, match=reason):
        _config(tmp_path, section)


def test_ldaps_uses_the_console_certificate_unless_told_and_needs_one(tmp_path: Path):
    config = _config(tmp_path, "enabled = true")
    assert tls_files(config) is None
    with pytest.raises(LdapError, match="LDAPS needs"):
        LdapServer(config, _NOTHING)
    (tmp_path / "console" / "tls").mkdir(parents=True)
    for name in ("console.pem", "console.key"):
        (tmp_path / "console" / "tls" / name).write_text("x")
    assert tls_files(config) == (tmp_path.resolve() / "console/tls/console.pem",
                                 tmp_path.resolve() / "console/tls/console.key")
    conf = render_conf(config.ldap, tmp_path / "ldap", tls_files(config))
    assert "console/tls/console.pem" in conf and "database sock" in conf and "readonly on" in conf


class _Nothing:
    def lookup(self, address: str) -> list[bytes]:
        return []

    def allow(self, peer: str) -> bool:
        return True


_NOTHING = _Nothing()
