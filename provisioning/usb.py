"""Watching for provisioning sticks: pyudev events → filter → mount read-only → provision → report.

A block device is taken only if it is a disk or partition with media, on the USB bus (unless
told otherwise, for tests with loop devices), carries a filesystem of an allowed type whose
label is one of the provisioning labels (``ESIGNBOX``), and is not mounted already. It is
mounted read-only with nosuid, nodev, noexec and nosymfollow under a private directory, the
bundle is copied off into memory (size-limited), verified and applied; only then is the stick
remounted read-write to receive its report, and unmounted. Nothing on the stick is ever run.

The event source is injectable: `StickWatcher(monitor=...)` takes anything with ``poll(timeout)``
returning pyudev-like devices (``subsystem``, ``device_type``, ``device_node``, ``sys_path``,
``action``, ``properties``, ``attributes``, ``ancestors``). By default it is a pyudev netlink
monitor on "udev" events, or on raw "kernel" events where no udev daemon runs; without udev the
filesystem label and type are probed with ``blkid -p``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyudev

from .bundle import DEFAULT_LIMITS, Limits
from .report import Report, write_report
from .service import Outcome, ProvisionOptions, provision_copied

log = logging.getLogger("esignbox.provisioning.usb")

DEFAULT_LABELS = ("ESIGNBOX",)
DEFAULT_FILESYSTEMS = ("vfat", "exfat")
MOUNT_ROOT = Path("/run/esignbox/media")
_BASE_OPTIONS = ("nosuid", "nodev", "noexec", "nosymfollow", "noatime")
# Files on FAT/exFAT get no permissions of their own: make them root's and not executable.
_FS_OPTIONS = {
    "vfat": ("uid=0", "gid=0", "fmask=0177", "dmask=0077", "shortname=mixed", "utf8", "flush"),
    "exfat": ("uid=0", "gid=0", "fmask=0177", "dmask=0077"),
}

Runner = Callable[..., subprocess.CompletedProcess[str]]  # the output that is read is asked for with text=True


@dataclass(frozen=True)
class StickInfo:
    devnode: str
    sys_path: str
    fstype: str
    label: str
    uuid: str
    key: tuple[str, str, str]  # what makes "the same media": sys path, disk sequence number, fs UUID


def mount_options(fstype: str, writable: bool = False) -> str:
    return ",".join(("rw" if writable else "ro", *_BASE_OPTIONS, *_FS_OPTIONS.get(fstype, ())))


def mount_command(devnode: str, mountpoint: Path, fstype: str) -> list[str]:
    return ["mount", "-t", fstype, "-o", mount_options(fstype), "--", devnode, str(mountpoint)]


def remount_command(mountpoint: Path, fstype: str, writable: bool) -> list[str]:
    return ["mount", "-o", "remount," + mount_options(fstype, writable), "--", str(mountpoint)]


def umount_command(mountpoint: Path) -> list[str]:
    return ["umount", "--", str(mountpoint)]


def probe_blkid(devnode: str, run: Runner = subprocess.run) -> dict[str, str]:
    """Filesystem LABEL, TYPE, UUID, USAGE by low-level probing (no udev database needed)."""
    done = run(["blkid", "-p", "-o", "export", "--", devnode], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        return {}
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def mounted_devices(mounts: Path = Path("/proc/self/mounts")) -> set[str]:
    try:
        return {line.split()[0] for line in mounts.read_text().splitlines() if line.strip()}
    except OSError:
        return set()


def _attribute(device: Any, name: str) -> str | None:
    try:
        value = device.attributes.get(name)
    except Exception:
        return None
    if value is None:
        return None
    return value.decode(errors="replace").strip() if isinstance(value, bytes) else str(value).strip()


def on_usb(device: Any) -> bool:
    if device.properties.get("ID_BUS") == "usb":
        return True
    return any(getattr(parent, "subsystem", None) == "usb" for parent in device.ancestors)


class Stick:
    """A provisioning stick mounted read-only at a private mount point; unmounted on exit."""

    def __init__(self, info: StickInfo, mount_root: Path, run: Runner = subprocess.run) -> None:
        self.info = info
        self.mountpoint = mount_root / f"stick-{Path(info.devnode).name}"
        self._run = run
        self._mounted = False

    def _do(self, command: list[str]) -> None:
        done = self._run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise OSError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()}")

    def __enter__(self) -> Stick:
        self.mountpoint.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.mountpoint.parent, 0o700)
        self.mountpoint.mkdir(mode=0o700, exist_ok=True)
        if os.path.ismount(self.mountpoint) or any(self.mountpoint.iterdir()):
            raise OSError(f"{self.mountpoint} is in use")
        self._do(mount_command(self.info.devnode, self.mountpoint, self.info.fstype))
        self._mounted = True
        return self

    def make_writable(self) -> None:
        self._do(remount_command(self.mountpoint, self.info.fstype, writable=True))

    def __exit__(self, *exc: object) -> None:
        if self._mounted:
            os.sync()
            try:
                self._do(umount_command(self.mountpoint))
            except OSError:
                log.warning("umount of %s failed; detaching it lazily", self.mountpoint)
                self._run(["umount", "-l", "--", str(self.mountpoint)], capture_output=True, timeout=60)
            self._mounted = False
        try:
            self.mountpoint.rmdir()
        except OSError:
            pass


class StickWatcher:
    def __init__(
        self,
        state_dir: Path,
        *,
        labels: tuple[str, ...] = DEFAULT_LABELS,
        filesystems: tuple[str, ...] = DEFAULT_FILESYSTEMS,
        require_usb: bool = True,
        mount_root: Path = MOUNT_ROOT,
        monitor: Any = None,
        context: Any = None,
        source: str = "auto",
        probe: Callable[[str], dict[str, str]] | None = None,
        run: Runner = subprocess.run,
        limits: Limits = DEFAULT_LIMITS,
        on_result: Callable[[StickInfo, Outcome], None] | None = None,
        provision_kwargs: ProvisionOptions | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.labels = {label.upper() for label in labels}
        self.filesystems = tuple(filesystems)
        self.require_usb = require_usb
        self.mount_root = Path(mount_root)
        self._monitor = monitor
        self._context = context
        self._source = source
        self._run = run
        self._probe = probe or (lambda devnode: probe_blkid(devnode, run))
        self._limits = limits
        self._on_result = on_result
        self._provision_kwargs = provision_kwargs or {}
        self._handled: dict[str, tuple[str, str, str]] = {}  # sys path → the media already handled
        self.stop_event = threading.Event()

    # -- deciding ----------------------------------------------------------------------------------
    def classify(self, device: Any) -> StickInfo | str:
        """A StickInfo for a provisioning stick, else the reason the device is not one."""
        if device.subsystem != "block":
            return "not a block device"
        if device.action not in (None, "add", "change"):
            return f"action {device.action}"
        if device.device_type not in ("disk", "partition"):
            return f"device type {device.device_type}"
        devnode = device.device_node
        if not devnode:
            return "no device node"
        props = device.properties
        if props.get("DM_NAME") or props.get("DM_UUID"):
            return "a device-mapper device"
        if self.require_usb and not on_usb(device):
            return "not on the USB bus"
        if _attribute(device, "size") in ("0", None):
            return "no media"
        fstype, label = props.get("ID_FS_TYPE"), props.get("ID_FS_LABEL")
        uuid, usage = props.get("ID_FS_UUID", ""), props.get("ID_FS_USAGE")
        if not fstype:
            probed = self._probe(devnode)
            fstype, label = probed.get("TYPE"), probed.get("LABEL")
            uuid, usage = probed.get("UUID", ""), probed.get("USAGE")
        if not fstype:
            return "no filesystem"
        if usage not in (None, "filesystem"):
            return f"usage {usage}"
        if fstype not in self.filesystems:
            return f"filesystem {fstype} not accepted"
        if (label or "").upper() not in self.labels:
            return f"label {label!r} is not a provisioning label"
        if devnode in mounted_devices():
            return "already mounted"
        key = (device.sys_path, props.get("DISKSEQ", ""), uuid)
        return StickInfo(devnode, device.sys_path, fstype, label or "", uuid, key)

    # -- handling ----------------------------------------------------------------------------------
    def on_event(self, device: Any) -> Outcome | None:
        if getattr(device, "action", None) == "remove":
            self._handled.pop(device.sys_path, None)
            return None
        verdict = self.classify(device)
        if isinstance(verdict, str):
            log.debug("ignoring %s: %s", getattr(device, "device_node", device), verdict)
            return None
        if self._handled.get(verdict.sys_path) == verdict.key:
            log.debug("%s already handled", verdict.devnode)
            return None
        self._handled[verdict.sys_path] = verdict.key
        return self.handle(verdict)

    def handle(self, info: StickInfo) -> Outcome:
        log.info("provisioning stick %s (%s, label %s)", info.devnode, info.fstype, info.label)
        try:
            with Stick(info, self.mount_root, self._run) as stick:
                outcome = provision_copied(self.state_dir, stick.mountpoint, limits=self._limits,
                                           **self._provision_kwargs)
                try:
                    stick.make_writable()
                    write_report(stick.mountpoint, outcome.report, outcome.files)
                    log.info("report written to %s: %s", info.devnode, outcome.report.result)
                except (OSError, ValueError) as exc:
                    log.error("could not write the report to %s: %s", info.devnode, exc)
        except OSError as exc:
            log.error("could not use stick %s: %s", info.devnode, exc)
            outcome = Outcome(Report(result="error", code="mount", message=str(exc)))
        if self._on_result is not None:
            self._on_result(info, outcome)
        return outcome

    # -- running -------------------------------------------------------------------------------------
    def context(self) -> Any:
        if self._context is None:
            self._context = pyudev.Context()
        return self._context

    def monitor(self) -> Any:
        if self._monitor is None:
            source = self._source
            if source == "auto":
                source = "udev" if Path("/run/udev/control").exists() else "kernel"
            self._monitor = pyudev.Monitor.from_netlink(self.context(), source=source)
            self._monitor.filter_by(subsystem="block")
            log.info("watching %s block-device events for sticks labelled %s", source, ", ".join(sorted(self.labels)))
        return self._monitor

    def scan_existing(self) -> None:
        """Sticks that were plugged in before the watcher started (or before boot)."""
        for device in self.context().list_devices(subsystem="block"):
            try:
                self.on_event(device)
            except Exception:
                log.exception("handling %s failed", device)

    def run(self, scan: bool = True) -> None:
        monitor = self.monitor()
        if hasattr(monitor, "start"):
            monitor.start()  # receive events from now on, before scanning what is already there
        if scan:
            self.scan_existing()
        while not self.stop_event.is_set():
            device = monitor.poll(timeout=0.5)
            if device is None:
                continue
            try:
                self.on_event(device)
            except Exception:
                log.exception("handling %s failed", device)

    def stop(self) -> None:
        self.stop_event.set()
