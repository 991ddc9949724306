"""The report the box leaves on the stick (and keeps a copy of): what it did, or why it refused.

Written to ``esignbox-report/`` at the stick's root: report.json (for tools), report.txt (for
people) and any CSR the bundle asked for. The directory and files are opened relative to the
stick's root with O_NOFOLLOW: a symlink planted on the stick cannot redirect the box's writes.
Reports hold no secrets.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .bundle import valid_name
from .fsutil import open_dir_nofollow

REPORT_DIR = "esignbox-report"
RESULTS = ("applied", "already-applied", "enrolled", "reset", "refused", "no-bundle", "error")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Report:
    result: str
    message: str
    code: str | None = None
    time: str = field(default_factory=_now)
    box_serial: str | None = None
    any_box: bool | None = None  # the bundle was made for any box trusting its key, not this one
    box_name: str | None = None
    trusted_key_id: str | None = None
    bundle_digest: str | None = None
    counter: int | None = None
    last_counter: int | None = None
    generation: int | None = None
    actions: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result in ("applied", "already-applied", "enrolled", "reset")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    def to_text(self) -> str:
        lines = [f"E-signature Box provisioning report, {self.time}",
                 f"result:          {self.result.upper()}" + (f" ({self.code})" if self.code and not self.ok else ""),
                 f"                 {self.message}"]
        for label, value in (("box serial", self.box_serial), ("box name", self.box_name),
                             ("provisioning key", self.trusted_key_id), ("bundle", self.bundle_digest),
                             ("bundle counter", self.counter), ("last applied", self.last_counter),
                             ("generation", self.generation)):
            if value is not None:
                lines.append(f"{label + ':':17}{value}")
        if self.any_box:
            lines.append(f"{'binding:':17}any box trusting the provisioning key (any_box), not this box's serial")
        lines += [f"  - {action}" for action in self.actions]
        if self.files:
            lines.append("files written next to this report: " + ", ".join(self.files))
        return "\n".join(lines) + "\n"


def _write_at(dir_fd: int, name: str, data: bytes) -> None:
    tmp = f".{name}.tmp"
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def write_report(root: Path, report: Report, files: dict[str, bytes] | None = None) -> Path:
    """Write the report (and ``files``, e.g. CSRs) into ``root/esignbox-report/``; returns that path.

    Raises OSError if the report directory on the stick is a symlink or not a directory.
    """
    files = files or {}
    for name in files:
        if not valid_name(name) or name.startswith("report."):
            raise ValueError(f"bad report file name {name!r}")
    root_fd = open_dir_nofollow(str(root))
    try:
        try:
            os.mkdir(REPORT_DIR, 0o755, dir_fd=root_fd)
        except FileExistsError:
            pass
        report_fd = open_dir_nofollow(REPORT_DIR, root_fd)  # ELOOP if someone planted a symlink
        try:
            for name, data in files.items():
                _write_at(report_fd, name, data)
            _write_at(report_fd, "report.json", report.to_json())
            _write_at(report_fd, "report.txt", report.to_text().encode())
            os.fsync(report_fd)
        finally:
            os.close(report_fd)
        os.fsync(root_fd)
    finally:
        os.close(root_fd)
    return root / REPORT_DIR
