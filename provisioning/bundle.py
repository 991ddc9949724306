"""The bundle format, and copying a bundle off a stick with strict limits.

A bundle is a directory (or an uncompressed tar of the same entries)::

    esignbox-bundle/
        manifest.json       what the box should become (see manifest.py)
        manifest.sig        {"format", "algorithm", "key_id", "signature"}
        files/<name>        the files the manifest names: PEM trust roots, a certificate chain

The signature covers the *digest list*, a canonical text naming every file of the bundle with
its SHA-256::

    ESIGNBOX-BUNDLE-V1
    <sha256 hex>  files/box-chain.pem
    <sha256 hex>  manifest.json

(sorted by path, "\\n" after each line). Adding, removing, renaming or changing any file changes
the list, so nothing outside what was signed can ride along. File names are flat and plain
(``[A-Za-z0-9][A-Za-z0-9._-]*``); anything else, symlinks, devices, sub-directories, ``..``,
absolute tar names, links in a tar, or a size over the limits is refused while copying, before
any byte is interpreted. Hidden regular files (``.DS_Store``, ``._*`` from macOS) are skipped:
they are neither signed nor read.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import keys as pkeys
from .errors import ProvisioningRefused
from .fsutil import open_dir_nofollow, read_regular_nofollow

BUNDLE_DIR = "esignbox-bundle"
BUNDLE_TAR = "esignbox-bundle.tar"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FILES = "files"
DIGEST_HEADER = "ESIGNBOX-BUNDLE-V1"
SIGNATURE_FORMAT = "esignbox-bundle-signature/1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Limits:
    manifest_bytes: int = 256 * 1024
    signature_bytes: int = 4 * 1024
    file_bytes: int = 2 * 1024 * 1024
    files: int = 32
    total_bytes: int = 8 * 1024 * 1024

    @property
    def tar_bytes(self) -> int:  # the members plus tar's headers and padding
        return self.total_bytes + (self.files + 4) * 1536 + 10240


DEFAULT_LIMITS = Limits()


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


@dataclass(frozen=True)
class RawBundle:
    """A bundle copied into memory: nothing here has been authenticated yet."""

    manifest: bytes
    signature: bytes | None
    files: dict[str, bytes] = field(default_factory=dict)
    source: str = ""

    def digest_list(self) -> bytes:
        entries = {MANIFEST: self.manifest, **{f"{FILES}/{name}": data for name, data in self.files.items()}}
        lines = [DIGEST_HEADER] + [f"{hashlib.sha256(entries[p]).hexdigest()}  {p}" for p in sorted(entries)]
        return ("\n".join(lines) + "\n").encode("ascii")

    @property
    def digest(self) -> str:
        """Names this exact bundle (its content, not its signature) in logs, reports and the audit log."""
        return hashlib.sha256(self.digest_list()).hexdigest()

    @property
    def size(self) -> int:
        return len(self.manifest) + len(self.signature or b"") + sum(map(len, self.files.values()))


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits, self.total, self.files = limits, 0, 0

    def count_file(self) -> None:
        self.files += 1
        if self.files > self.limits.files:
            raise ProvisioningRefused("oversized", f"the bundle has more than {self.limits.files} files")

    def take(self, name: str, size: int, limit: int) -> None:
        if size > limit:
            raise ProvisioningRefused("oversized", f"{name} is larger than {limit} bytes")
        self.total += size
        if self.total > self.limits.total_bytes:
            raise ProvisioningRefused("oversized", f"the bundle is larger than {self.limits.total_bytes} bytes")


def _hidden(name: str) -> bool:
    return name.startswith(".")


# -- copying off a directory (a stick, or a directory given by hand) -------------------------------

def read_dir(path: Path, limits: Limits = DEFAULT_LIMITS) -> RawBundle:
    """Copy a bundle directory into memory, refusing anything unsafe before interpreting a byte."""
    try:
        root = open_dir_nofollow(str(path))
    except OSError as exc:
        raise _path_refusal(str(path), exc) from exc
    try:
        return _read_dir_fd(root, str(path), limits)
    finally:
        os.close(root)


def _path_refusal(name: str, exc: OSError) -> ProvisioningRefused:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return ProvisioningRefused("unsafe-path", f"{name} is a symlink or not a plain file/directory")
    if exc.errno == errno.ENOENT:
        return ProvisioningRefused("no-bundle", f"{name} not found")
    return ProvisioningRefused("malformed", f"cannot read {name}: {exc.strerror}")


def _entries(dir_fd: int, where: str) -> list[tuple[str, os.stat_result]]:
    out = []
    for name in sorted(os.listdir(dir_fd)):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise ProvisioningRefused("unsafe-path", f"{where}/{name} is a symlink; bundles hold plain files only")
        if _hidden(name) and stat.S_ISREG(st.st_mode):
            continue
        out.append((name, st))
    return out


def _read_dir_fd(root: int, where: str, limits: Limits) -> RawBundle:
    budget = _Budget(limits)
    manifest = signature = None
    files: dict[str, bytes] = {}
    for name, st in _entries(root, where):
        if name == FILES and stat.S_ISDIR(st.st_mode):
            continue
        if name not in (MANIFEST, SIGNATURE) or not stat.S_ISREG(st.st_mode):
            raise ProvisioningRefused("unsafe-path", f"unexpected entry {name!r} in the bundle")
        limit = limits.manifest_bytes if name == MANIFEST else limits.signature_bytes
        data = _read(name, root, where, limit, budget)
        if name == MANIFEST:
            manifest = data
        else:
            signature = data
    try:
        files_fd = open_dir_nofollow(FILES, root)
    except FileNotFoundError:
        files_fd = None
    except OSError as exc:
        raise _path_refusal(f"{where}/{FILES}", exc) from exc
    if files_fd is not None:
        try:
            for name, st in _entries(files_fd, f"{where}/{FILES}"):
                if not valid_name(name) or not stat.S_ISREG(st.st_mode):
                    raise ProvisioningRefused("unsafe-path", f"{FILES}/{name!r} is not a plainly named regular file")
                budget.count_file()
                files[name] = _read(name, files_fd, f"{where}/{FILES}", limits.file_bytes, budget)
        finally:
            os.close(files_fd)
    if manifest is None:
        raise ProvisioningRefused("malformed", f"{where} has no {MANIFEST}")
    return RawBundle(manifest, signature, files, where)


def _read(name: str, dir_fd: int, where: str, limit: int, budget: _Budget) -> bytes:
    try:
        data = read_regular_nofollow(name, dir_fd, limit)
    except OSError as exc:
        raise _path_refusal(f"{where}/{name}", exc) from exc
    except ValueError as exc:
        raise ProvisioningRefused("unsafe-path", str(exc)) from exc
    if data is None:
        raise ProvisioningRefused("oversized", f"{where}/{name} is larger than {limit} bytes")
    budget.take(f"{where}/{name}", len(data), limit)
    return data


# -- copying off a tar --------------------------------------------------------------------------------

def read_tar_bytes(data: bytes, source: str, limits: Limits = DEFAULT_LIMITS) -> RawBundle:
    """Parse an uncompressed tar held in memory; only plain file members with expected names."""
    budget = _Budget(limits)
    manifest = signature = None
    files: dict[str, bytes] = {}
    seen: set[str] = set()
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")  # noqa: SIM115 -- closed by the `with` below; a malformed tar is refused here
    except tarfile.TarError as exc:
        raise ProvisioningRefused("malformed", f"{source} is not an uncompressed tar: {exc}") from exc
    with archive:
        for member in archive:
            name = member.name
            while name.startswith("./"):
                name = name[2:]
            if name.startswith("/") or ".." in name.split("/"):
                raise ProvisioningRefused("unsafe-path", f"tar member {member.name!r} escapes the bundle")
            if name in (FILES, f"{FILES}/", "", ".") and member.isdir():
                continue
            parts = name.split("/")
            if _hidden(parts[-1]) and member.isreg():
                continue
            if not member.isreg():
                raise ProvisioningRefused("unsafe-path", f"tar member {member.name!r} is not a regular file")
            if name in seen:
                raise ProvisioningRefused("malformed", f"tar member {name!r} appears twice")
            seen.add(name)
            if name == MANIFEST:
                limit = limits.manifest_bytes
            elif name == SIGNATURE:
                limit = limits.signature_bytes
            elif len(parts) == 2 and parts[0] == FILES and valid_name(parts[1]):
                limit = limits.file_bytes
                budget.count_file()
            else:
                raise ProvisioningRefused("unsafe-path", f"unexpected tar member {member.name!r}")
            budget.take(f"{source}:{name}", member.size, limit)
            extracted = archive.extractfile(member)
            content = extracted.read(limit + 1) if extracted is not None else b""
            if len(content) != member.size:
                raise ProvisioningRefused("malformed", f"tar member {name!r} is truncated")
            if name == MANIFEST:
                manifest = content
            elif name == SIGNATURE:
                signature = content
            else:
                files[parts[1]] = content
    if manifest is None:
        raise ProvisioningRefused("malformed", f"{source} has no {MANIFEST}")
    return RawBundle(manifest, signature, files, source)


def read_tar(path: Path, limits: Limits = DEFAULT_LIMITS, dir_fd: int | None = None) -> RawBundle:
    """Copy a bundle tar into memory (size-capped while reading) and parse it there."""
    parent_fd = dir_fd if dir_fd is not None else os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        data = _read(path.name, parent_fd, str(path.parent), limits.tar_bytes,
                     _Budget(Limits(total_bytes=limits.tar_bytes, files=1)))
    finally:
        if dir_fd is None:
            os.close(parent_fd)
    return read_tar_bytes(data, str(path), limits)


# -- finding the bundle -----------------------------------------------------------------------------

def read_source(path: Path, limits: Limits = DEFAULT_LIMITS) -> RawBundle:
    """Copy the bundle at ``path``: a bundle directory, a bundle tar, or a stick's root holding one."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError as exc:
        raise ProvisioningRefused("no-bundle", f"{path} not found") from exc
    if stat.S_ISREG(st.st_mode):
        return read_tar(path, limits)
    if not stat.S_ISDIR(st.st_mode):
        raise ProvisioningRefused("unsafe-path", f"{path} is a symlink or not a plain file/directory")
    root = open_dir_nofollow(str(path))
    try:
        names = set(os.listdir(root))
        if MANIFEST in names:
            return _read_dir_fd(root, str(path), limits)
        if BUNDLE_DIR in names and BUNDLE_TAR in names:
            raise ProvisioningRefused("malformed", f"{path} holds both {BUNDLE_DIR}/ and {BUNDLE_TAR}; keep one")
        if BUNDLE_DIR in names:
            try:
                sub = open_dir_nofollow(BUNDLE_DIR, root)
            except OSError as exc:
                raise _path_refusal(f"{path}/{BUNDLE_DIR}", exc) from exc
            try:
                return _read_dir_fd(sub, f"{path}/{BUNDLE_DIR}", limits)
            finally:
                os.close(sub)
        if BUNDLE_TAR in names:
            return read_tar(path / BUNDLE_TAR, limits, dir_fd=root)
        raise ProvisioningRefused("no-bundle", f"no {BUNDLE_DIR}/ or {BUNDLE_TAR} in {path}")
    finally:
        os.close(root)


# -- the administrator's side: writing and signing --------------------------------------------------

def write_dir(path: Path, manifest: dict[str, Any], files: dict[str, bytes]) -> None:
    """Write an unsigned bundle directory (manifest.json + files/)."""
    for name in files:
        if not valid_name(name):
            raise ValueError(f"bad bundle file name {name!r}")
    path.mkdir(parents=True, exist_ok=True)
    (path / SIGNATURE).unlink(missing_ok=True)
    (path / MANIFEST).write_bytes(json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    if files:
        (path / FILES).mkdir(exist_ok=True)
        for name, data in files.items():
            (path / FILES / name).write_bytes(data)


def signature_document(raw: RawBundle, private_key: pkeys.PrivateKey) -> bytes:
    public = private_key.public_key()
    document = {
        "format": SIGNATURE_FORMAT,
        "algorithm": pkeys.algorithm(public),
        "key_id": pkeys.key_id(public),
        "signature": base64.b64encode(pkeys.sign(private_key, raw.digest_list())).decode(),
    }
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def sign_dir(path: Path, private_key: pkeys.PrivateKey, limits: Limits = DEFAULT_LIMITS) -> RawBundle:
    """Sign the bundle directory in place (writes manifest.sig); returns the signed bundle."""
    raw = read_dir(path, limits)
    signature = signature_document(raw, private_key)
    (path / SIGNATURE).write_bytes(signature)
    return RawBundle(raw.manifest, signature, raw.files, str(path))


def write_tar(raw: RawBundle, out: Path) -> None:
    """The same bundle as one tar file (what `make-bundle --tar` puts on a stick)."""
    def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        archive.addfile(info, io.BytesIO(data))

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        add(archive, MANIFEST, raw.manifest)
        if raw.signature is not None:
            add(archive, SIGNATURE, raw.signature)
        for name in sorted(raw.files):
            add(archive, f"{FILES}/{name}", raw.files[name])
