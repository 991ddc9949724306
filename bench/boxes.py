"""The boxes under test: throwaway dev boxes, their `esignbox serve` processes, and what those use.

A box is set up with the firmware's own `init_dev` (SoftHSM2 token, key, dev PKI, box.toml) in a
temporary directory, or in ``--state-dir`` to reuse one. Servers are started as a field box
starts, `esignbox serve`, and stopped with SIGTERM as systemd stops them; the number of workers is
changed through the one box.toml writer (firmware/operations/configstore.py) before a start.

CPU and memory are read from /proc for the whole process tree of a server (the supervising
parent and its workers), so a figure always means "the box", whatever its number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from firmware.config import CONFIG_NAME, BoxConfig
from firmware.devbox import init_dev
from firmware.devpki import DevPki, PkiServer
from firmware.operations import configstore
from firmware.store import ClientRegistry, Database
from hsm import KeyAlgorithm

__all__ = [
    "ESIGNBOX", "DevBox", "Server", "api_connections", "cpu_seconds", "cpu_times", "machine_busy_seconds", "memory_kb",
    "prepare_box", "progress", "set_workers", "start_pki", "start_server", "tree",
]

ESIGNBOX = str(Path(sys.executable).with_name("esignbox"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
_SPAWN = multiprocessing.get_context("spawn")
_START_TIMEOUT_S = 60.0  # a start on a crowded machine; a healthy box answers within seconds


def progress(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port the kernel just handed out, so parallel runs and a running `make run` don't collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass(frozen=True)
class DevBox:
    config: BoxConfig
    api_key: str


def _init_dev(state_dir: Path, pki_port: int | None, api_port: int, algorithm: KeyAlgorithm) -> None:
    init_dev(state_dir, pki_port=pki_port, api_port=api_port, key_algorithm=algorithm)


def prepare_box(requested: Path | None, algorithm: KeyAlgorithm, stack: contextlib.ExitStack) -> DevBox:
    """A dev box with a signing key of ``algorithm`` and a fresh API client (disabled on exit, so a
    reused state dir keeps no live bench keys). An existing box keeps its PKI port: it is inside
    its certificates.

    The box is made in a spawned process: SoftHSM2 reads its configuration (which names the
    box's token directory) once per process, so this one could open only one box's token.
    """
    if requested is None:
        state_dir = Path(tempfile.mkdtemp(prefix="esignbox-bench-"))
        stack.callback(shutil.rmtree, state_dir, ignore_errors=True)
    else:
        state_dir = requested
    pki_port = None if (state_dir / CONFIG_NAME).exists() else free_port()
    progress(f"{algorithm.value} dev box in {state_dir}")
    child = _SPAWN.Process(target=_init_dev, args=(state_dir, pki_port, free_port(), algorithm))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"init_dev failed for {state_dir} (exit code {child.exitcode})")
    config = BoxConfig.load(state_dir)
    registry = ClientRegistry(Database(config.database))
    client, api_key = registry.add(f"bench-{os.getpid()}-{os.urandom(3).hex()}")
    stack.callback(registry.disable, client.id)
    return DevBox(config, api_key)


def set_workers(box: DevBox, workers: int) -> None:
    """``[api] workers`` for the next start, written as the console would write it."""
    if BoxConfig.load(box.config.state_dir).api.workers != workers:
        configstore.update(box.config.state_dir, {"api": {"workers": workers}}, actor="bench", action="config.change",
                           details={})


def start_pki(box: DevBox, stack: contextlib.ExitStack, processes: int) -> PkiServer:
    """The box's dev PKI, answering ``processes`` requests at once (one would make its TSA, not
    the box, the ceiling of every timestamped step)."""
    config = box.config
    assert config.pki_port is not None
    server = PkiServer(DevPki(config.state_dir / "pki", f"http://127.0.0.1:{config.pki_port}"), config.pki_port,
                       processes=processes)
    server.start()
    stack.callback(server.stop)
    return server


@dataclasses.dataclass
class Server:
    """A running `esignbox serve` (or bench/serve_unmetered.py) and how many workers it runs."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    workers: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return [pid for pid in tree(self.pid) if pid != self.pid]

    def stop(self) -> None:
        """SIGTERM first, so the box shuts down the way it does under systemd."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(box: DevBox, workers: int, stack: contextlib.ExitStack, metered: bool = True) -> Server:
    """`esignbox serve` with ``workers`` workers on a free port, healthy and with every worker up.

    ``metered=False`` starts bench/serve_unmetered.py instead: the same API and workers without
    the signature ledger.
    """
    set_workers(box, workers)
    port = free_port()
    state_dir = box.config.state_dir
    log_path = state_dir / f"bench-serve-{port}.log"
    command = [ESIGNBOX, "--state-dir", str(state_dir), "serve", "--port", str(port)]
    if not metered:
        command = [sys.executable, str(Path(__file__).with_name("serve_unmetered.py")), str(state_dir), str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", port, process, workers)
    stack.callback(server.stop)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited early:\n{log_path.read_text()[-4000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{server.url}/v1/health", timeout=5).status_code == 200 \
                    and len(server.worker_pids()) == workers:
                return server
        time.sleep(0.2)
    raise RuntimeError(f"the box did not become healthy with {workers} workers:\n{log_path.read_text()[-4000:]}")


# -- /proc ------------------------------------------------------------------------------------------
def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # ended meanwhile
        return []
    return [pid, *(p for child in children for p in tree(int(child)))]


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process (utime and stime of /proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of one process."""
    return sum(cpu_times(pid))


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB. PSS shares each shared page among the processes that map
    it, so the PSS of a tree adds up to what it really takes; RSS counts shared pages in each."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
    return values.get("Rss", 0), values.get("Pss", 0)


def machine_busy_seconds() -> float:
    """CPU seconds all cores together spent not idle since boot (first line of /proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK  # minus idle and iowait


def api_connections(port: int, pids: list[int]) -> list[int]:
    """How many established connections to ``port`` each of ``pids`` holds now: the box's end of
    each loopback connection in /proc/net/tcp, found among each process's descriptors."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":  # local port, ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    held += os.readlink(fd) in inodes
        counts.append(held)
    return counts
