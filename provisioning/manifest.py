"""The manifest: what a box should become, as declarative data. Validated strictly, field by field.

Read only after the signature checked out. Unknown fields are refused (a typo must not be
silently ignored), every file under files/ must be named by the manifest and every name must
exist. Sections that are absent leave that part of the box as it is.

    {
      "format": "esignbox-bundle/1",
      "counter": 1732612345,                       # > the last applied counter (replay guard)
      "created_at": "2025-11-26T10:00:00+00:00",
      "expires_at": "2025-12-03T10:00:00+00:00",   # refused afterwards
      "box_serial": "9f3c…",                       # only this box applies it, or instead:
      "any_box": true,                             # any box trusting the key applies it (said on
                                                   # the report and in the audit log)
      "box_name": "signing-box-hq",
      "network": {"hostname": "esign-hq", "mode": "static", "address": "192.0.2.10/24",
                  "gateway": "192.0.2.1", "dns": ["192.0.2.53"], "ntp": ["ntp.example"],
                  "api_host": "0.0.0.0", "api_port": 8443},
      "admin": {"setup_code": "ABCD-EFGH-JKMN",   # one-time code for the admin console's first set-up
                "reset_admin": true},             # optional: remove the administrator first (forgotten password)
      "services": {"tsa_urls": ["http://tsa.example/tsr"], "ocsp_urls": [...], "crl_urls": [...]},
      "clients": [{"id": "0123456789ab", "name": "billing", "key_sha256": "<hex>",
                   "scopes": ["hash"], "calls": 10000, "rate_per_minute": 600, "rate_per_day": null}],
      "trust_roots": "trust-roots.pem",            # a file under files/
      "signing_chain": {"key_label": "box-2027", "file": "box-chain.pem"},
      "key_request": {"label": "box-2027", "algorithm": "ec-p256", "subject": "CN=Signing Box,O=Example,C=BE"}
    }
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from firmware.config import is_hostname
from firmware.errors import InvalidRequest
from firmware.operations import KEY_LABEL, parse_subject
from firmware.store import SCOPES
from hsm import KEY_ALGORITHMS

from .bundle import valid_name
from .errors import ProvisioningRefused

T = TypeVar("T")

FORMAT = "esignbox-bundle/1"
MAX_COUNTER = 2**53
_CLIENT_ID = re.compile(r"^[0-9a-f]{12}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_CLIENT_FIELDS = ("scopes", "calls", "rate_per_minute", "rate_per_day")


@dataclass(frozen=True)
class Network:
    hostname: str | None
    mode: str | None  # "dhcp" or "static"
    address: str | None
    gateway: str | None
    dns: tuple[str, ...]
    ntp: tuple[str, ...]
    api_host: str | None
    api_port: int | None


@dataclass(frozen=True)
class ClientSpec:
    id: str
    name: str
    key_sha256: str
    settings: dict[str, Any]  # only the fields the manifest gives: scopes (tuple), calls, rate_per_*


@dataclass(frozen=True)
class KeyRequest:
    label: str
    algorithm: str
    subject: str


@dataclass(frozen=True)
class ChainSpec:
    key_label: str
    file: str


@dataclass(frozen=True)
class Manifest:
    counter: int
    created_at: datetime
    expires_at: datetime
    box_serial: str | None  # None only when any_box is set: the binding is always explicit
    any_box: bool
    box_name: str | None
    network: Network | None
    admin_setup_code: str | None
    admin_reset: bool  # the set-up code replaces the existing administrator (a forgotten password)
    services: dict[str, tuple[str, ...]]  # only the lists given: tsa_urls, ocsp_urls, crl_urls
    clients: tuple[ClientSpec, ...]
    trust_roots: str | None
    signing_chain: ChainSpec | None
    key_request: KeyRequest | None
    factory_reset: bool = False  # wipe the box back to "not set up" (firmware/operations/reset.py); nothing else

    def sections(self) -> list[str]:
        present = {
            "factory_reset": self.factory_reset,
            "box_name": self.box_name is not None, "network": self.network is not None,
            "admin": self.admin_setup_code is not None, "services": bool(self.services),
            "clients": bool(self.clients), "trust_roots": self.trust_roots is not None,
            "signing_chain": self.signing_chain is not None, "key_request": self.key_request is not None,
        }
        return [name for name, here in present.items() if here]


class _Invalid(Exception):
    pass


def _fail(where: str, message: str) -> NoReturn:
    raise _Invalid(f"{where}: {message}")


def _object(value: object, where: str, allowed: set[str], required: AbstractSet[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(where, "must be an object")
    unknown = set(value) - allowed
    if unknown:
        _fail(where, f"unknown field(s) {', '.join(sorted(unknown))}")
    missing = set(required) - set(value)
    if missing:
        _fail(where, f"missing field(s) {', '.join(sorted(missing))}")
    return value


def _text(value: object, where: str, max_len: int = 200) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or not value.isprintable():
        _fail(where, f"must be printable text of 1–{max_len} characters")
    return value


def _optional_text(value: object, where: str, max_len: int = 200) -> str | None:
    return None if value is None else _text(value, where, max_len)


def _int(value: object, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        _fail(where, f"must be a whole number from {low} to {high}")
    return value


def _optional_int(value: object, where: str, low: int, high: int) -> int | None:
    return None if value is None else _int(value, where, low, high)


def _list(value: object, where: str, item: Callable[[Any, str], T], max_items: int = 16) -> tuple[T, ...]:
    if not isinstance(value, list) or len(value) > max_items:
        _fail(where, f"must be a list of at most {max_items} items")
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))


def _time(value: object, where: str) -> datetime:
    text = _text(value, where, 40)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _fail(where, "must be an ISO 8601 time")
    if parsed.tzinfo is None:
        _fail(where, "must carry a time zone (e.g. +00:00)")
    return parsed


def _url(value: object, where: str) -> str:
    text = _text(value, where, 2048)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _fail(where, "must be an http:// or https:// URL")
    return text


def _hostname(value: object, where: str) -> str:
    text = _text(value, where, 253)
    if not is_hostname(text):
        _fail(where, "must be a host name (letters, digits, '-', dot-separated)")
    return text


def _ip(value: object, where: str) -> str:
    try:
        return str(ipaddress.ip_address(_text(value, where, 64)))
    except ValueError:
        _fail(where, "must be an IP address")


def _host_or_ip(value: object, where: str) -> str:
    try:
        return _ip(value, where)
    except _Invalid:
        return _hostname(value, where)


def _network(value: object) -> Network:
    fields = {"hostname", "mode", "address", "gateway", "dns", "ntp", "api_host", "api_port"}
    net = _object(value, "network", fields)
    mode = net.get("mode")
    if mode not in (None, "dhcp", "static"):
        _fail("network.mode", "must be \"dhcp\" or \"static\"")
    address = gateway = None
    if "address" in net:
        try:
            address = str(ipaddress.ip_interface(_text(net["address"], "network.address", 64)))
        except ValueError:
            _fail("network.address", "must be an address with prefix length, e.g. 192.0.2.10/24")
    if "gateway" in net:
        gateway = _ip(net["gateway"], "network.gateway")
    if mode == "static" and address is None:
        _fail("network", "a static configuration needs an address")
    if mode == "dhcp" and (address or gateway):
        _fail("network", "dhcp takes no address or gateway")
    return Network(
        hostname=_hostname(net["hostname"], "network.hostname") if "hostname" in net else None,
        mode=mode, address=address, gateway=gateway,
        dns=_list(net.get("dns", []), "network.dns", _ip, 4),
        ntp=_list(net.get("ntp", []), "network.ntp", _host_or_ip, 4),
        api_host=_ip(net["api_host"], "network.api_host") if "api_host" in net else None,
        api_port=_int(net["api_port"], "network.api_port", 1, 65535) if "api_port" in net else None,
    )


def _client(value: object, where: str) -> ClientSpec:
    c = _object(value, where, {"id", "name", "key_sha256", *_CLIENT_FIELDS}, {"id", "name", "key_sha256"})
    if not isinstance(c["id"], str) or not _CLIENT_ID.match(c["id"]):
        _fail(f"{where}.id", "must be 12 lower-case hex digits")
    if not isinstance(c["key_sha256"], str) or not _SHA256_HEX.match(c["key_sha256"]):
        _fail(f"{where}.key_sha256", "must be 64 lower-case hex digits")
    settings: dict[str, Any] = {}
    if "scopes" in c:
        scopes = _list(c["scopes"], f"{where}.scopes", lambda v, w: _text(v, w, 16), 4)
        if not scopes or set(scopes) - set(SCOPES):
            _fail(f"{where}.scopes", f"must be a non-empty subset of {', '.join(SCOPES)}")
        settings["scopes"] = tuple(s for s in SCOPES if s in scopes)
    for name in ("calls", "rate_per_minute", "rate_per_day"):
        if name in c:
            settings[name] = _optional_int(c[name], f"{where}.{name}", 0, 10**12)
    return ClientSpec(c["id"], _text(c["name"], f"{where}.name", 100), c["key_sha256"], settings)


def _file_ref(value: object, where: str, files: set[str], used: set[str]) -> str:
    if not isinstance(value, str) or not valid_name(value):
        _fail(where, "must be a plain file name under files/")
    if value not in files:
        _fail(where, f"files/{value} is not in the bundle")
    used.add(value)
    return value


def _strict_json(data: bytes) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                raise _Invalid(f"duplicate field {key!r}")
            seen[key] = value
        return seen

    def constant(name: str) -> NoReturn:
        raise _Invalid(f"{name} is not allowed")

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _Invalid(f"not valid JSON: {exc}") from exc


def parse(data: bytes, files: set[str]) -> Manifest:
    """Validate manifest bytes against the files the bundle holds; raises ProvisioningRefused."""
    try:
        return _parse(data, files)
    except _Invalid as exc:
        raise ProvisioningRefused("invalid-content", f"manifest {exc}") from exc


def _parse(data: bytes, files: set[str]) -> Manifest:
    top = {"format", "counter", "created_at", "expires_at", "box_serial", "any_box", "box_name", "network", "admin",
           "services", "clients", "trust_roots", "signing_chain", "key_request", "factory_reset"}
    m = _object(_strict_json(data), "manifest", top, {"format", "counter", "created_at", "expires_at"})
    if m["format"] != FORMAT:
        _fail("format", f"must be {FORMAT!r}")
    created, expires = _time(m["created_at"], "created_at"), _time(m["expires_at"], "expires_at")
    if expires <= created:
        _fail("expires_at", "must be after created_at")
    box_serial = _optional_text(m.get("box_serial"), "box_serial", 128)
    any_box = m.get("any_box", False)
    if not isinstance(any_box, bool):
        _fail("any_box", "must be true or false")
    if box_serial is None and not any_box:
        # A stick that any box trusting the key applies is a choice to make on purpose, not the
        # default of a forgotten field: a lost stick could otherwise reconfigure every box.
        _fail("box_serial", "required: name the box this bundle is for, or set any_box: true")
    if box_serial is not None and any_box:
        _fail("any_box", "give box_serial or any_box: true, not both")
    used: set[str] = set()
    factory_reset = m.get("factory_reset", False)
    if not isinstance(factory_reset, bool):
        _fail("factory_reset", "must be true or false")
    if factory_reset:
        # A reset is alone on its stick and for one box: a lost reset stick must not wipe every box.
        others = set(m) - {"format", "counter", "created_at", "expires_at", "box_serial", "factory_reset"}
        if others:
            _fail("factory_reset", f"a reset bundle holds nothing else (found {', '.join(sorted(others))})")
        if box_serial is None:
            _fail("factory_reset", "a reset names the box it wipes (box_serial); any_box is not allowed")

    setup_code, admin_reset = None, False
    if "admin" in m:
        admin = _object(m["admin"], "admin", {"setup_code", "reset_admin"}, {"setup_code"})
        setup_code = _text(admin["setup_code"], "admin.setup_code", 64)
        admin_reset = admin.get("reset_admin", False)
        if not isinstance(admin_reset, bool):
            _fail("admin.reset_admin", "must be true or false")
        if sum(c.isalnum() for c in setup_code) < 10:
            _fail("admin.setup_code", "needs at least 10 letters or digits")

    services: dict[str, tuple[str, ...]] = {}
    if "services" in m:
        s = _object(m["services"], "services", {"tsa_urls", "ocsp_urls", "crl_urls"})
        services = {name: _list(s[name], f"services.{name}", _url, 8) for name in sorted(s)}

    clients = _list(m.get("clients", []), "clients", _client, 256)
    for attr in ("id", "name"):
        values = [getattr(c, attr) for c in clients]
        if len(values) != len(set(values)):
            _fail("clients", f"two clients share a {attr}")

    chain = None
    if "signing_chain" in m:
        c = _object(m["signing_chain"], "signing_chain", {"key_label", "file"}, {"key_label", "file"})
        if not isinstance(c["key_label"], str) or not KEY_LABEL.match(c["key_label"]):
            _fail("signing_chain.key_label", "must be a token key label ([A-Za-z0-9._-], ≤ 64)")
        chain = ChainSpec(c["key_label"], _file_ref(c["file"], "signing_chain.file", files, used))

    request = None
    if "key_request" in m:
        k = _object(m["key_request"], "key_request", {"label", "algorithm", "subject"}, {"label", "algorithm", "subject"})
        if not isinstance(k["label"], str) or not KEY_LABEL.match(k["label"]):
            _fail("key_request.label", "must be a token key label ([A-Za-z0-9._-], ≤ 64)")
        if k["algorithm"] not in KEY_ALGORITHMS:
            _fail("key_request.algorithm", f"must be one of {', '.join(KEY_ALGORITHMS)}")
        try:
            parse_subject(_text(k["subject"], "key_request.subject", 500))
        except InvalidRequest as exc:
            _fail("key_request.subject", str(exc))
        request = KeyRequest(k["label"], k["algorithm"], k["subject"])

    trust_roots = _file_ref(m["trust_roots"], "trust_roots", files, used) if "trust_roots" in m else None
    unused = files - used
    if unused:
        _fail("files", f"files/{', files/'.join(sorted(unused))} not named by the manifest")

    return Manifest(
        counter=_int(m["counter"], "counter", 1, MAX_COUNTER),
        created_at=created, expires_at=expires,
        box_serial=box_serial, any_box=any_box,
        box_name=_text(m["box_name"], "box_name", 64) if "box_name" in m else None,
        network=_network(m["network"]) if "network" in m else None,
        admin_setup_code=setup_code, admin_reset=admin_reset, services=services, clients=clients,
        trust_roots=trust_roots, signing_chain=chain, key_request=request, factory_reset=factory_reset,
    )
