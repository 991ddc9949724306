"""The USB side of provisioning: device filtering, mount options, the watcher, and real mounts.

Three levels:
- `classify` on small fakes with pyudev's attributes, and on real pyudev Devices of this machine;
- the whole watcher loop with an injected monitor and a runner that "mounts" a directory, to check
  the order read-only mount → copy → apply → read-write remount → report → umount;
- real block devices: a filesystem image on a loop device, a real pyudev netlink monitor on kernel
  events, a real read-only nosuid/nodev/noexec/nosymfollow mount (root, losetup and a filesystem
  the kernel has are needed; otherwise these tests are skipped).
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pyudev

from provisioning import usb
from provisioning.bundle import BUNDLE_DIR
from provisioning.report import REPORT_DIR
from provisioning.usb import StickWatcher, mount_command, mount_options, remount_command

from .support import ESIGNBOX
from .test_provisioning import ProvBox, admin_key, make_bundle, pbox  # noqa: F401  (fixtures)


@dataclass
class FakeParent:
    subsystem: str


@dataclass
class FakeDevice:
    """The attributes of pyudev.Device that the watcher reads."""

    sys_path: str = "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block/sdz/sdz1"
    device_node: str | None = "/dev/sdz1"
    device_type: str = "partition"
    subsystem: str = "block"
    action: str | None = "add"
    properties: dict = field(default_factory=lambda: {
        "ID_BUS": "usb", "ID_FS_TYPE": "vfat", "ID_FS_LABEL": "ESIGNBOX", "ID_FS_UUID": "1234-ABCD",
        "ID_FS_USAGE": "filesystem", "DISKSEQ": "42"})
    attributes: dict = field(default_factory=lambda: {"size": b"1024000"})
    ancestors: tuple = (FakeParent("block"), FakeParent("scsi"), FakeParent("usb"), FakeParent("usb"), FakeParent("pci"))

    def changed(self, **kwargs) -> FakeDevice:
        values = {**self.__dict__, **kwargs}
        values["properties"] = {**self.properties, **kwargs.get("properties", {})}
        return FakeDevice(**values)


def no_probe(devnode: str) -> dict:
    raise AssertionError(f"no probe expected for {devnode}")


@pytest.fixture
def watcher(tmp_path: Path) -> StickWatcher:
    return StickWatcher(tmp_path / "state", mount_root=tmp_path / "media", probe=no_probe)


# -- which devices are provisioning sticks --------------------------------------------------------------

def test_a_usb_stick_with_the_label_is_accepted(watcher: StickWatcher, monkeypatch):
    monkeypatch.setattr(usb, "mounted_devices", lambda: set())
    info = watcher.classify(FakeDevice())
    assert not isinstance(info, str), info
    assert (info.devnode, info.fstype, info.label, info.uuid) == ("/dev/sdz1", "vfat", "ESIGNBOX", "1234-ABCD")
    assert isinstance(watcher.classify(FakeDevice().changed(properties={"ID_FS_LABEL": "esignbox"})), usb.StickInfo)
    superfloppy = FakeDevice().changed(device_type="disk", device_node="/dev/sdz", action="change")
    assert isinstance(watcher.classify(superfloppy), usb.StickInfo)


@pytest.mark.parametrize("change, reason", [
    ({"properties": {"ID_FS_LABEL": "BACKUP"}}, "not a provisioning label"),
    ({"properties": {"ID_FS_TYPE": "ntfs"}}, "filesystem ntfs not accepted"),
    ({"properties": {"ID_FS_TYPE": "ext4"}}, "filesystem ext4 not accepted"),
    ({"properties": {"ID_FS_USAGE": "crypto"}}, "usage crypto"),
    ({"properties": {"ID_BUS": "ata"}, "ancestors": (FakeParent("scsi"), FakeParent("pci"))}, "not on the USB bus"),
    ({"attributes": {"size": b"0"}}, "no media"),
    ({"action": "remove"}, "action remove"),
    ({"action": "bind"}, "action bind"),
    ({"subsystem": "usb"}, "not a block device"),
    ({"device_node": None}, "no device node"),
    ({"properties": {"DM_NAME": "crypt"}}, "device-mapper"),
])
def test_other_devices_are_ignored(watcher: StickWatcher, monkeypatch, change: dict, reason: str):
    monkeypatch.setattr(usb, "mounted_devices", lambda: set())
    verdict = watcher.classify(FakeDevice().changed(**change))
    assert isinstance(verdict, str) and reason in verdict


def test_mounted_devices_and_disks_without_a_filesystem_are_ignored(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(usb, "mounted_devices", lambda: {"/dev/sdz1"})
    probed = []
    watcher = StickWatcher(tmp_path, probe=lambda devnode: probed.append(devnode) or {"PTTYPE": "dos"})
    assert watcher.classify(FakeDevice()) == "already mounted"
    bare = {k: v for k, v in FakeDevice().properties.items() if not k.startswith("ID_FS_")}
    assert watcher.classify(FakeDevice(device_node="/dev/sdz", device_type="disk", properties=bare)) == "no filesystem"
    assert probed == ["/dev/sdz"]  # without udev's ID_FS_* the filesystem is probed (blkid -p)


def test_real_pyudev_devices_of_this_machine(tmp_path: Path):
    context = pyudev.Context()
    names = sorted(os.listdir("/sys/class/block"))
    assert names, "no block devices in /sys"
    strict = StickWatcher(tmp_path, probe=no_probe)
    for name in names:
        device = pyudev.Devices.from_sys_path(context, f"/sys/class/block/{name}")
        assert device.subsystem == "block" and device.device_node == f"/dev/{name}"
        verdict = strict.classify(device)
        if not usb.on_usb(device):  # the system disk, loop and zram devices: never taken
            assert verdict in ("not on the USB bus", f"device type {device.device_type}"), (name, verdict)
    # with the USB requirement off (as for a loop device), the label still decides
    loose = StickWatcher(tmp_path, require_usb=False, labels=("NO-SUCH-LABEL-" + secrets.token_hex(2),))
    for name in names:
        verdict = loose.classify(pyudev.Devices.from_sys_path(context, f"/sys/class/block/{name}"))
        assert isinstance(verdict, str), (name, verdict)


def test_mount_options():
    for fstype in ("vfat", "exfat", "ext4"):
        options = mount_options(fstype).split(",")
        assert options[0] == "ro"
        assert {"nosuid", "nodev", "noexec", "nosymfollow"} <= set(options)
        assert mount_options(fstype, writable=True).split(",")[0] == "rw"
        assert {"nosuid", "nodev", "noexec"} <= set(mount_options(fstype, writable=True).split(","))
    assert {"uid=0", "fmask=0177", "dmask=0077"} <= set(mount_options("vfat").split(","))
    assert mount_command("/dev/sdz1", Path("/run/m/stick-sdz1"), "vfat") == [
        "mount", "-t", "vfat", "-o", mount_options("vfat"), "--", "/dev/sdz1", "/run/m/stick-sdz1"]
    assert remount_command(Path("/m"), "vfat", True) == ["mount", "-o", "remount," + mount_options("vfat", True), "--", "/m"]


# -- the watcher loop, with a directory standing in for the stick ------------------------------------

class FakeMonitor:
    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.started = False

    def start(self) -> None:
        self.started = True

    def poll(self, timeout: float):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None


class DirectoryMounts:
    """A mount runner whose "stick" is a directory: mount copies it in, umount copies it back."""

    def __init__(self, stick: Path) -> None:
        self.stick, self.commands, self.report_before_rw = stick, [], None

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        mountpoint = Path(command[-1])
        if command[:2] == ["mount", "-t"]:
            shutil.copytree(self.stick, mountpoint, symlinks=True, dirs_exist_ok=True)
        elif command[:3] == ["mount", "-o", "remount," + mount_options("vfat", True)]:
            self.report_before_rw = (mountpoint / REPORT_DIR).exists()
        elif command[0] == "umount":
            shutil.rmtree(self.stick)
            shutil.copytree(mountpoint, self.stick, symlinks=True)
            for child in list(mountpoint.iterdir()):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return subprocess.CompletedProcess(command, 0, "", "")


def run_watcher(watcher: StickWatcher, monitor: FakeMonitor, events: list, expected: int) -> list:
    results: list = []
    done = threading.Event()

    def on_result(info, outcome):
        results.append(outcome.report)
        if len(results) >= expected:
            done.set()

    watcher._on_result = on_result
    for event in events:
        monitor.events.put(event)
    thread = threading.Thread(target=watcher.run, kwargs={"scan": False}, daemon=True)
    thread.start()
    if expected:
        assert done.wait(30), "the watcher did not handle the stick"
    while not monitor.events.empty():  # let it drain the rest
        threading.Event().wait(0.05)
    threading.Event().wait(0.6)
    watcher.stop()
    thread.join(10)
    return results


def test_watcher_mounts_read_only_applies_then_reports(pbox: ProvBox, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(usb, "mounted_devices", lambda: set())
    stick = tmp_path / "stick"
    make_bundle(stick / BUNDLE_DIR, pbox.key, 1, box_name="via-usb", network={"api_port": 9666})
    mounts, monitor = DirectoryMounts(stick), FakeMonitor()
    watcher = StickWatcher(pbox.state_dir, mount_root=tmp_path / "media", monitor=monitor, run=mounts, probe=no_probe)

    stick_event = FakeDevice()
    other_disk = FakeDevice(device_node="/dev/sdy1", sys_path="/sys/devices/x/block/sdy/sdy1").changed(
        properties={"ID_FS_LABEL": "HOLIDAY-PICS"})
    results = run_watcher(watcher, monitor, [other_disk, stick_event, stick_event.changed(action="change")], 1)

    assert [r.result for r in results] == ["applied"], results
    assert pbox.config().api_port == 9666
    mountpoint = str(tmp_path / "media" / "stick-sdz1")
    assert mounts.commands == [
        ["mount", "-t", "vfat", "-o", mount_options("vfat"), "--", "/dev/sdz1", mountpoint],
        ["mount", "-o", "remount," + mount_options("vfat", True), "--", mountpoint],
        ["umount", "--", mountpoint],
    ]
    assert mounts.report_before_rw is False  # nothing written while read-only
    report = json.loads((stick / REPORT_DIR / "report.json").read_text())
    assert report["result"] == "applied" and report["counter"] == 1
    assert not (tmp_path / "media" / "stick-sdz1").exists()


def test_watcher_handles_each_insertion_once(pbox: ProvBox, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(usb, "mounted_devices", lambda: set())
    stick = tmp_path / "stick"
    make_bundle(stick / BUNDLE_DIR, pbox.key, 1, box_name="once")
    monitor = FakeMonitor()
    watcher = StickWatcher(pbox.state_dir, mount_root=tmp_path / "media", monitor=monitor,
                           run=DirectoryMounts(stick), probe=no_probe)
    device = FakeDevice()
    events = [device, device.changed(action="change"), device.changed(action="remove"), device]
    results = run_watcher(watcher, monitor, events, 2)
    assert [r.result for r in results] == ["applied", "already-applied"]
    assert json.loads((stick / REPORT_DIR / "report.json").read_text())["result"] == "already-applied"


def test_watcher_reports_a_refusal_on_the_stick(pbox: ProvBox, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(usb, "mounted_devices", lambda: set())
    stick = tmp_path / "stick"
    make_bundle(stick / BUNDLE_DIR, None, 1, box_name="unsigned")
    monitor = FakeMonitor()
    watcher = StickWatcher(pbox.state_dir, mount_root=tmp_path / "media", monitor=monitor,
                           run=DirectoryMounts(stick), probe=no_probe)
    results = run_watcher(watcher, monitor, [FakeDevice()], 1)
    assert [(r.result, r.code) for r in results] == [("refused", "unsigned")]
    text = (stick / REPORT_DIR / "report.txt").read_text()
    assert "REFUSED (unsigned)" in text and "not signed" in text


def test_a_stick_present_at_start_is_handled(pbox: ProvBox, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(usb, "mounted_devices", lambda: set())
    stick = tmp_path / "stick"
    make_bundle(stick / BUNDLE_DIR, pbox.key, 1, box_name="plugged-in-at-boot")

    class Context:
        def list_devices(self, subsystem):
            assert subsystem == "block"
            return [FakeDevice(action=None), FakeDevice(device_node="/dev/vda", sys_path="/sys/devices/v/block/vda",
                                                        ancestors=(FakeParent("pci"),), properties={"ID_BUS": "ata"})]

    monitor = FakeMonitor()
    watcher = StickWatcher(pbox.state_dir, mount_root=tmp_path / "media", monitor=monitor, context=Context(),
                           run=DirectoryMounts(stick), probe=no_probe)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    for _ in range(600):  # 30 s at most
        if (stick / REPORT_DIR / "report.json").exists():
            break
        threading.Event().wait(0.05)
    watcher.stop()
    thread.join(10)
    assert monitor.started
    assert json.loads((stick / REPORT_DIR / "report.json").read_text())["result"] == "applied"


def test_a_symlinked_report_directory_on_the_stick_is_not_followed(pbox: ProvBox, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(usb, "mounted_devices", lambda: set())
    victim = tmp_path / "victim"
    victim.mkdir()
    stick = tmp_path / "stick"
    make_bundle(stick / BUNDLE_DIR, pbox.key, 1, box_name="x")
    (stick / REPORT_DIR).symlink_to(victim)
    monitor = FakeMonitor()
    watcher = StickWatcher(pbox.state_dir, mount_root=tmp_path / "media", monitor=monitor,
                           run=DirectoryMounts(stick), probe=no_probe)
    results = run_watcher(watcher, monitor, [FakeDevice()], 1)
    assert results[0].result == "applied"
    assert list(victim.iterdir()) == []


# -- real block devices: a loop device, kernel uevents, real mounts ---------------------------------------

def _filesystem_for_loop_tests() -> str | None:
    """vfat if the kernel and dosfstools have it (as on a real stick), else ext4; None: unusable."""
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("losetup", "mount", "umount", "blkid")):
        return None
    try:
        kernel = Path("/proc/filesystems").read_text().split()
    except OSError:
        return None
    if "vfat" in kernel and shutil.which("mkfs.vfat"):
        return "vfat"
    if "ext4" in kernel and shutil.which("mkfs.ext4"):
        return "ext4"
    return None


LOOP_FS = _filesystem_for_loop_tests()


@pytest.fixture
def loop_support() -> str:
    """These tests are part of the proof, not optional: fail (never skip) where they cannot run."""
    if LOOP_FS is None:
        pytest.fail("needs root, losetup, mount, blkid and a vfat/ext4 filesystem in the kernel")
    return LOOP_FS


needs_loop = pytest.mark.usefixtures("loop_support")


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def make_image(image: Path, label: str, content: Path, filesystem: str | None = None) -> None:
    with open(image, "wb") as handle:
        handle.truncate(16 * 1024 * 1024)
    if (filesystem or LOOP_FS) == "ext4":
        _run("mkfs.ext4", "-q", "-F", "-L", label, "-d", str(content), str(image))
        return
    _run("mkfs.vfat", "-n", label, str(image))
    with loop_device(image) as device:
        mountpoint = image.with_suffix(".mnt")
        mountpoint.mkdir()
        _run("mount", "-t", "vfat", device, str(mountpoint))
        try:
            shutil.copytree(content, mountpoint, dirs_exist_ok=True)
        finally:
            _run("umount", str(mountpoint))


class loop_device:
    def __init__(self, image: Path) -> None:
        self.image, self.device = image, None

    def __enter__(self) -> str:
        self.device = _run("losetup", "--find", "--show", str(self.image))
        return self.device

    def __exit__(self, *exc) -> None:
        subprocess.run(["losetup", "-d", self.device], capture_output=True, timeout=60)


def read_report_from(image: Path, tmp_path: Path) -> dict:
    mountpoint = tmp_path / "check"
    mountpoint.mkdir(exist_ok=True)
    with loop_device(image) as device:
        _run("mount", "-o", "ro", device, str(mountpoint))
        try:
            return json.loads((mountpoint / REPORT_DIR / "report.json").read_text())
        finally:
            _run("umount", str(mountpoint))


class RecordingRunner:
    """subprocess.run, recording commands and the options the kernel reports for each mount."""

    def __init__(self) -> None:
        self.commands, self.mount_options = [], []

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        done = subprocess.run(command, **kwargs)
        if command[0] == "mount":
            for line in Path("/proc/self/mounts").read_text().splitlines():
                fields = line.split()
                if fields[1] == command[-1]:
                    self.mount_options.append(set(fields[3].split(",")))
        return done


@needs_loop
def test_real_stick_on_a_loop_device_with_kernel_uevents(pbox: ProvBox, tmp_path: Path):
    label = "ESB" + secrets.token_hex(3).upper()  # unique: no other device on this machine matches
    content = tmp_path / "content"
    make_bundle(content / BUNDLE_DIR, pbox.key, 1, box_name="from-a-real-stick", network={"api_port": 9777})
    image = tmp_path / "stick.img"
    make_image(image, label, content)

    runner, results, handled = RecordingRunner(), [], threading.Event()
    watcher = StickWatcher(
        pbox.state_dir, labels=(label,), filesystems=(LOOP_FS,), require_usb=False, mount_root=tmp_path / "media",
        source="kernel", run=runner, on_result=lambda info, outcome: (results.append((info, outcome)), handled.set()),
    )
    watcher.monitor().start()  # listening before the device appears
    thread = threading.Thread(target=watcher.run, kwargs={"scan": False}, daemon=True)
    thread.start()
    try:
        with loop_device(image) as device:
            assert handled.wait(30), "no kernel uevent reached the watcher for the loop device"
            info, outcome = results[0]
            assert info.devnode == device and info.label == label and info.fstype == LOOP_FS
            assert outcome.report.result == "applied", outcome.report.message
            assert device not in usb.mounted_devices()  # unmounted again
    finally:
        watcher.stop()
        thread.join(10)

    assert pbox.config().api_port == 9777
    ro, rw = runner.mount_options[0], runner.mount_options[1]
    assert {"ro", "nosuid", "nodev", "noexec", "nosymfollow"} <= ro
    assert {"rw", "nosuid", "nodev", "noexec"} <= rw
    assert [c[0] for c in runner.commands if c[0] in ("mount", "umount")] == ["mount", "mount", "umount"]
    report = read_report_from(image, tmp_path)
    assert report["result"] == "applied" and report["counter"] == 1


@needs_loop
def test_real_stick_with_planted_symlinks(pbox: ProvBox, tmp_path: Path):
    label = "ESB" + secrets.token_hex(3).upper()
    content = tmp_path / "content"
    bundle = make_bundle(content / BUNDLE_DIR, pbox.key, 1, files={"roots.pem": b"x"}, trust_roots="roots.pem")
    (bundle / "files" / "roots.pem").unlink()
    (bundle / "files" / "roots.pem").symlink_to("/etc/passwd")
    victim = tmp_path / "victim"
    victim.mkdir()
    (content / REPORT_DIR).symlink_to(victim)
    image = tmp_path / "stick.img"
    make_image(image, label, content, filesystem="ext4")  # symlinks need a filesystem that has them

    watcher = StickWatcher(pbox.state_dir, labels=(label,), filesystems=(LOOP_FS,), require_usb=False,
                           mount_root=tmp_path / "media")
    with loop_device(image) as device:
        real = pyudev.Devices.from_device_file(pyudev.Context(), device)
        info = watcher.classify(real)
        assert isinstance(info, usb.StickInfo), info
        outcome = watcher.handle(info)
        assert device not in usb.mounted_devices()
    assert (outcome.report.result, outcome.report.code) == ("refused", "unsafe-path")
    assert list(victim.iterdir()) == []  # the report was not written through the planted link
    assert pbox.refusals()[-1]["code"] == "unsafe-path"


@needs_loop
def test_provision_stick_command_on_a_loop_device(pbox: ProvBox, tmp_path: Path):
    """What a udev-started unit runs: `esignbox provision stick /dev/…` for one device."""
    label = "ESB" + secrets.token_hex(3).upper()
    content = tmp_path / "content"
    make_bundle(content / BUNDLE_DIR, pbox.key, 1, box_name="one-shot", network={"api_port": 9888})
    image = tmp_path / "stick.img"
    make_image(image, label, content)
    with loop_device(image) as device:
        done = subprocess.run(
            [ESIGNBOX, "--state-dir", str(pbox.state_dir), "provision", "stick", device, "--any-bus",
             "--label", label, "--filesystem", LOOP_FS, "--mount-root", str(tmp_path / "media")],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "APPLIED" in done.stdout, done.stdout + done.stderr
        assert device not in usb.mounted_devices()
        wrong = subprocess.run([ESIGNBOX, "--state-dir", str(pbox.state_dir), "provision", "stick", device],
                               capture_output=True, text=True, timeout=120)
        assert wrong.returncode == 1 and "not on the USB bus" in wrong.stderr
    assert pbox.config().api_port == 9888
    assert read_report_from(image, tmp_path)["result"] == "applied"
