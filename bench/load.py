"""Load steps: wrk sends one fixed request over N keep-alive connections for a few seconds.

wrk is C and event-driven: it drives 32 connections on one thread with a few percent of a core,
so on this 2-core machine nearly all CPU is left to the box (a Python client took a core of its
own). Each request of a step is the same (a fixed hash, a fixed batch, a fixed timestamp
request); the box keeps no cache keyed on them, so each still costs a full signature.

While wrk runs, the step watches the box from /proc: CPU of its process tree and of each worker,
the dev PKI's CPU, the machine's (what is left is "other": the rest of the machine), the peak
memory of the tree, and how many connections each worker holds mid-step.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import re
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from asn1crypto import tsp
from boxes import Server, api_connections, cpu_seconds, cpu_times, machine_busy_seconds, memory_kb, tree

__all__ = ["Body", "Wrk", "hash_body", "tsa_body"]

_SAMPLE_S = 0.25
_WRK_TIMEOUT = "30s"  # a slow answer counts in the latency figures instead of as a socket error


@dataclasses.dataclass(frozen=True)
class Body:
    name: str
    path: str  # URL path
    content_type: str
    data: bytes
    items: int  # signatures (or timestamps) per request


def hash_body(level: str, batch: int = 0) -> Body:
    """POST /v1/signatures (one hash) or /v1/signatures/batch (``batch`` hashes), PAdES profile."""
    digests = [base64.b64encode(hashlib.sha256(f"bench {i}".encode()).digest()).decode() for i in range(batch or 1)]
    body: dict[str, Any] = {"hash_algorithm": "sha256", "level": level, "profile": "PAdES"}
    if batch:
        body["hashes"] = digests
    else:
        body["hash"] = digests[0]
    path = "/v1/signatures/batch" if batch else "/v1/signatures"
    name = f"batch×{batch} {level}" if batch else f"hash {level}"
    return Body(name, path, "application/json", json.dumps(body).encode(), batch or 1)


def tsa_body(path: str) -> Body:
    """An RFC 3161 request for the dev TSA at ``path``, as the box sends it (nonce, certificate)."""
    request = tsp.TimeStampReq({
        "version": 1,
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                            "hashed_message": hashlib.sha256(b"bench").digest()},
        "nonce": 0x5EED,
        "cert_req": True,
    })
    return Body("TSA alone", path, "application/timestamp-query", request.dump(), 1)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, p50/p99 latency and failures from `wrk --latency` output."""
    latency = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None or set(latency) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    if re.search(r"^\s+0 requests in", out, re.M):
        latency = {"50": math.nan, "99": math.nan}  # wrk says 0 for no answer at all
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in sockets.groups()) if sockets else 0)
    return {"requests_per_s": float(rate.group(1)), "p50_ms": latency["50"], "p99_ms": latency["99"],
            "errors": errors}


class _Watch(threading.Thread):
    """Peak memory of a server's tree and its connections per worker, sampled while a step runs."""

    def __init__(self, server: Server | None, seconds: float) -> None:
        super().__init__(daemon=True)
        self._server, self._mid = server, time.monotonic() + seconds / 2
        self._done = threading.Event()
        self.peak_rss_kb = self.peak_pss_kb = 0
        self.connections: list[int] = []

    def run(self) -> None:
        while self._server is not None and not self._done.wait(_SAMPLE_S):
            sizes = [memory_kb(pid) for pid in tree(self._server.pid)]
            self.peak_rss_kb = max(self.peak_rss_kb, sum(rss for rss, _ in sizes))
            self.peak_pss_kb = max(self.peak_pss_kb, sum(pss for _, pss in sizes))
            if not self.connections and time.monotonic() >= self._mid:
                self.connections = api_connections(self._server.port, self._server.worker_pids())

    def finish(self) -> None:
        self._done.set()
        self.join()


class Wrk:
    """Runs wrk steps; the Lua scripts that set each body and its headers live in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("wrk") is None:
            raise RuntimeError("wrk is not installed (apt-get install wrk; `make system-deps` does)")
        self._workdir = workdir
        self._scripts: dict[tuple[str, str], Path] = {}

    def script(self, body: Body, api_key: str | None) -> Path:
        """A script that posts ``body`` (read from a file: it may be binary) with its headers."""
        key = (body.name, api_key or "")
        if key not in self._scripts:
            number = len(self._scripts)
            data = self._workdir / f"body-{number}.bin"
            data.write_bytes(body.data)
            lines = ['wrk.method = "POST"', f'local f = assert(io.open("{data}", "rb"))', 'wrk.body = f:read("*a")',
                     "f:close()", f'wrk.headers["Content-Type"] = "{body.content_type}"']
            if api_key is not None:
                lines.append(f'wrk.headers["Authorization"] = "Bearer {api_key}"')
            script = self._workdir / f"post-{number}.lua"
            script.write_text("\n".join(lines) + "\n")
            self._scripts[key] = script
        return self._scripts[key]

    def _wrk(self, url: str, script: Path, connections: int, seconds: int) -> str:
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={_WRK_TIMEOUT}", "--latency",
                   "-s", str(script), url]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def warm(self, base_url: str, body: Body, api_key: str | None, connections: int) -> None:
        """An unmeasured second of the same load: each worker's first-use costs (revocation cache,
        TSA connection, lazily built parts) stay out of the measured steps."""
        self._wrk(base_url + body.path, self.script(body, api_key), connections, 1)

    def step(self, base_url: str, body: Body, api_key: str | None, connections: int, seconds: int,
             server: Server | None = None, pki_pid: int | None = None) -> dict[str, Any]:
        """One measured step: wrk's figures, plus who used the CPU (in cores) and the server's memory."""
        script = self.script(body, api_key)
        pids = tree(server.pid) if server is not None else []
        workers = server.worker_pids() if server is not None else []
        watch = _Watch(server, seconds)
        server0 = [cpu_times(pid) for pid in pids]
        workers0 = [cpu_seconds(pid) for pid in workers]
        pki_pids = tree(pki_pid) if pki_pid else []  # the dev PKI's processes
        pki0 = sum(cpu_seconds(pid) for pid in pki_pids)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped meanwhile
        busy0, start = machine_busy_seconds(), time.monotonic()
        watch.start()
        out = self._wrk(base_url + body.path, script, connections, seconds)
        watch.finish()
        window = time.monotonic() - start
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy = machine_busy_seconds() - busy0
        server1 = [cpu_times(pid) for pid in pids]
        server_user = sum(user for user, _ in server1) - sum(user for user, _ in server0)
        server_s = server_user + sum(system for _, system in server1) - sum(system for _, system in server0)
        wrk_s = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
        pki_s = sum(cpu_seconds(pid) for pid in pki_pids) - pki0
        figures = parse_wrk(out)
        return {
            "name": body.name,
            "connections": connections,
            **figures,
            "per_s": figures["requests_per_s"] * body.items,
            "server_cores": server_s / window,
            "server_system_cores": (server_s - server_user) / window,  # the kernel's share: sockets, fsync
            "wrk_cores": wrk_s / window,
            "pki_cores": pki_s / window,
            "other_cores": max(0.0, busy - server_s - wrk_s - pki_s) / window,
            "worker_cores": [(cpu_seconds(pid) - cpu0) / window for pid, cpu0 in zip(workers, workers0, strict=True)],
            "worker_connections": watch.connections,
            "peak_rss_kb": watch.peak_rss_kb,
            "peak_pss_kb": watch.peak_pss_kb,
        }
