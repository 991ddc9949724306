"""Signing throughput, latency and memory of the E-signature Box on this machine (`make bench`).

Not a test: it prints figures for a human, each set beside what bounds it — the token's own
speed (raw signs/s, 1 and N processes), the dev TSA's own speed — so that the cost of everything
between a client and the token (HTTP, JSON, CMS assembly, ledger, TSA round trips) shows as a
ratio. It sets up throwaway dev boxes (RSA-2048 and P-256 keys on SoftHSM2, dev PKI,
`esignbox serve`) in temporary directories unless ``--state-dir`` names one to reuse (the RSA
box), stops everything it started on exit, Ctrl-C included, and writes the report to
bench/last-report.md as well as to stdout.

The load generator (wrk) runs on the same cores as the box and the dev PKI; every step says who
used how much CPU, so a crowded machine shows as such.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from boxes import (
    DevBox,
    Server,
    cpu_seconds,
    memory_kb,
    prepare_box,
    progress,
    start_pki,
    start_server,
    tree,
)
from load import Body, Wrk, hash_body, tsa_body
from pdf import bench_pdf
from pyspy import find_pyspy, record, summarise
from raw_token import raw_sign_rate
from report import report

from firmware.store import Database
from hsm import KeyAlgorithm, SignatureScheme

BATCH_SIZE = 100
_SETTLE_S, _IDLE_CORES = 0.5, 0.1  # a box using under a tenth of a core for half a second is idle
REPORT_FILE = Path(__file__).with_name("last-report.md")
CORES = os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Options:
    seconds: int  # length of each measured load step
    raw_seconds: float
    pdf_runs: int
    workers: tuple[int, ...]  # the sweep
    profile: bool
    state_dir: Path | None
    json_file: Path | None
    report_file: Path


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 s steps and 3 PDF runs, to check the script works (~2 min)")
    p.add_argument("--seconds", type=int, help="length of each load step (default 10, --quick 1)")
    p.add_argument("--workers", default=f"1,2,{CORES}",
                   help=f"worker counts of the sweep, comma-separated (default 1,2,{CORES}: 1, 2 and one per core)")
    p.add_argument("--profile", action="store_true",
                   help="also sample one worker with py-spy under B-B load: Python time per request by function"
                        " (needs py-spy: pip install -e '.[bench]')")
    p.add_argument("--state-dir", type=Path, help="reuse (or create) this RSA dev box instead of a temporary one")
    p.add_argument("--json", type=Path, dest="json_file", help="also write the figures to this JSON file")
    p.add_argument("--report", type=Path, default=REPORT_FILE, help=f"where the report goes (default {REPORT_FILE})")
    args = p.parse_args(argv)
    seconds = args.seconds or (1 if args.quick else 10)
    if args.profile and find_pyspy() is None:
        p.error("--profile needs py-spy: pip install -e '.[bench]' (or pip install py-spy)")
    return Options(
        seconds=seconds,
        raw_seconds=1.0 if args.quick else 3.0,
        pdf_runs=3 if args.quick else 20,
        workers=tuple(sorted({int(w) for w in args.workers.split(",")})),
        profile=args.profile,
        state_dir=args.state_dir,
        json_file=args.json_file,
        report_file=args.report,
    )


def memory(server: Server) -> dict[str, Any]:
    """RSS and PSS (KiB) of the server's parent and of each worker, now."""
    parent = memory_kb(server.pid)
    workers = [memory_kb(pid) for pid in server.worker_pids()]
    return {"parent_rss_kb": parent[0], "parent_pss_kb": parent[1],
            "worker_rss_kb": [rss for rss, _ in workers], "worker_pss_kb": [pss for _, pss in workers],
            "rss_kb": parent[0] + sum(rss for rss, _ in workers), "pss_kb": parent[1] + sum(pss for _, pss in workers)}


def settle(roots: list[int], timeout_s: float = 120.0) -> None:
    """Wait until the box and the dev PKI (the processes below ``roots``) are idle: wrk stops
    sending at the end of a step, but the box still answers what it had accepted — 32 B-LT
    requests whose revocation data is being fetched hold every waitress thread for seconds —
    which the next step would pay."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = [pid for root in roots for pid in tree(root)]
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(_SETTLE_S)
        if sum(cpu_seconds(pid) for pid in pids) - before < _IDLE_CORES * _SETTLE_S:
            return


class Bench:
    def __init__(self, options: Options, stack: contextlib.ExitStack) -> None:
        self.options = options
        self.stack = stack
        self.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="esignbox-bench-")))
        self.wrk = Wrk(self.workdir)
        self._warmed: set[tuple[int, str]] = set()
        self.pki_pid: int | None = None  # the dev PKI, once started

    def step(self, server: Server, box: DevBox, body: Body, connections: int, basis: str) -> dict[str, Any]:
        """A measured step against ``server``, after an unmeasured one the first time each kind of
        body reaches this server. ``basis`` names the rate the step is compared with in the report."""
        settle([server.pid, *([self.pki_pid] if self.pki_pid else [])])
        if (server.pid, body.name) not in self._warmed:
            self.wrk.warm(server.url, body, box.api_key, max(connections, 2 * server.workers))
            self._warmed.add((server.pid, body.name))
        progress(f"{body.name}, {connections} connection(s), {server.workers} worker(s), {self.options.seconds} s")
        result = self.wrk.step(server.url, body, box.api_key, connections, self.options.seconds, server, self.pki_pid)
        return {**result, "workers": server.workers, "basis": basis}

    def raw(self, box: DevBox, scheme: SignatureScheme) -> dict[str, Any]:
        figures = {}
        for processes in sorted({1, CORES}):
            progress(f"raw token: {box.config.key_label} {scheme.value}, {processes} process(es)")
            figures[str(processes)] = raw_sign_rate(box.config, scheme, processes, self.options.raw_seconds)
        return figures

    def tsa_alone(self, box: DevBox) -> list[dict[str, Any]]:
        """The dev TSA's own rate: wrk posting timestamp requests straight to it."""
        url, _, path = box.config.tsa_urls[0].partition("://")[2].partition("/")
        base, body = f"http://{url}", tsa_body("/" + path)
        self.wrk.warm(base, body, None, 1)
        steps = []
        for connections in (1, 32):
            progress(f"TSA alone, {connections} connection(s)")
            step = self.wrk.step(base, body, None, connections, self.options.seconds, pki_pid=self.pki_pid)
            steps.append({**step, "workers": 0, "basis": "tsa"})
        return steps

    def api(self, box: DevBox, server: Server) -> list[dict[str, Any]]:
        single = hash_body("B-B")
        batch = hash_body("B-B", BATCH_SIZE)
        steps = [self.step(server, box, single, c, basis="rsa") for c in (1, 8, 32)]
        steps += [self.step(server, box, batch, c, basis="rsa") for c in sorted({1, CORES})]
        steps += [self.step(server, box, hash_body(level), 32, basis="tsa") for level in ("B-T", "B-LT")]
        return steps

    def metering_overhead(self, box: DevBox, server: Server) -> dict[str, Any]:
        """B-B at 8 connections with and without the ledger, metered runs on both sides of the other
        (the first before the unmetered server starts: its workers' start takes the CPU for seconds)."""
        body = hash_body("B-B")
        before = self.step(server, box, body, 8, basis="rsa")
        unmetered = start_server(box, server.workers, self.stack, metered=False)
        without = self.step(unmetered, box, body, 8, basis="rsa")
        unmetered.stop()
        after = self.step(server, box, body, 8, basis="rsa")
        metered = (before["per_s"] + after["per_s"]) / 2
        return {"metered": [before, after], "unmetered": without, "overhead": 1 - metered / without["per_s"]}

    def sweep(self, box: DevBox, main: Server, main_steps: list[dict[str, Any]],
              main_memory: dict[str, Any]) -> list[dict[str, Any]]:
        """B-B at 8 and 32 connections for each worker count; the main server's figures for its own."""
        rows = []
        body = hash_body("B-B")
        for workers in self.options.workers:
            if workers == main.workers:
                steps = [s for s in main_steps if s["name"] == body.name and s["connections"] in (8, 32)]
                rows.append({"workers": workers, "steps": steps, "idle": main_memory})
                continue
            server = start_server(box, workers, self.stack)
            idle = memory(server)
            rows.append({"workers": workers, "steps": [self.step(server, box, body, c, basis="rsa") for c in (8, 32)],
                         "idle": idle})
            server.stop()
        return rows

    def profile(self, box: DevBox) -> dict[str, Any]:
        """One worker under B-B at 8 connections, sampled by py-spy for the middle of the step."""
        pyspy = find_pyspy()
        assert pyspy is not None  # checked with the options
        server = start_server(box, 1, self.stack)
        body = hash_body("B-B")
        self.wrk.warm(server.url, body, box.api_key, 8)
        seconds = max(3, self.options.seconds)
        stacks = self.workdir / "stacks.txt"
        progress(f"profile: py-spy on the worker, B-B at 8 connections, {seconds} s")
        load = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{seconds + 2}s", "-s", str(self.wrk.script(body, box.api_key)),
                                 server.url + body.path], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        (worker,) = server.worker_pids()
        count0 = self._audit_count(box)
        record(pyspy, worker, seconds, stacks)
        requests = self._audit_count(box) - count0
        load.communicate()
        server.stop()
        return summarise(stacks, requests)

    @staticmethod
    def _audit_count(box: DevBox) -> int:
        """Signatures recorded so far: what the profiled worker answered, counted exactly."""
        row = Database(box.config.database).connect().execute("SELECT max(seq) FROM audit_log").fetchone()
        return int(row[0] or 0)


def machine_facts(options: Options) -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor() or "unknown",
    )
    softhsm = subprocess.run(["softhsm2-util", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpus": CORES, "cpu_model": model, "python": platform.python_version(), "softhsm": softhsm,
            "seconds_per_step": options.seconds, "load_before": os.getloadavg()}


def run(options: Options) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        bench = Bench(options, stack)
        figures: dict[str, Any] = {"machine": machine_facts(options)}
        rsa = prepare_box(options.state_dir, KeyAlgorithm.RSA_2048, stack)
        p256 = prepare_box(None, KeyAlgorithm.EC_P256, stack)
        figures["raw"] = {"rsa": bench.raw(rsa, SignatureScheme.RSA_PKCS1V15), "p256": bench.raw(p256, SignatureScheme.ECDSA)}
        progress(f"starting the dev PKI, {CORES} processes")
        bench.pki_pid = start_pki(rsa, stack, CORES).pid
        figures["tsa"] = bench.tsa_alone(rsa)
        progress(f"starting esignbox serve, {CORES} workers")
        server = start_server(rsa, CORES, stack)
        started = memory(server)
        figures["api"] = bench.api(rsa, server)
        figures["memory"] = {"started": started, "after_load": memory(server),
                             "peak_rss_kb": max(s["peak_rss_kb"] for s in figures["api"]),
                             "peak_pss_kb": max(s["peak_pss_kb"] for s in figures["api"]),
                             "pids": len(tree(server.pid))}
        figures["metering"] = bench.metering_overhead(rsa, server)
        figures["pdf"] = bench_pdf(rsa, server, options.pdf_runs)
        server.stop()  # one `esignbox serve` per state dir at a time: the sweep starts its own
        figures["sweep"] = bench.sweep(rsa, server, figures["api"], started)
        p256_server = start_server(p256, CORES, stack)
        figures["p256"] = [bench.step(p256_server, p256, hash_body("B-B"), c, basis="p256") for c in (8, 32)]
        p256_server.stop()
        figures["profile"] = bench.profile(rsa) if options.profile else None
        figures["machine"]["load_after"] = os.getloadavg()
        progress("stopping servers")
    return figures


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C raises KeyboardInterrupt; make SIGTERM unwind the same way so the ExitStack stops
    # the servers and removes the temporary boxes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = parse_args(argv)
    t0 = time.monotonic()
    try:
        figures = run(options)
    except KeyboardInterrupt:
        progress("interrupted; servers stopped")
        return 130
    figures["wall_seconds"] = time.monotonic() - t0
    if options.json_file:
        options.json_file.write_text(json.dumps(figures, indent=2) + "\n")
    text = report(figures)
    print(text)
    options.report_file.write_text(text + "\n")
    progress(f"report written to {options.report_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
