"""Signing throughput and latency of the E-signature Box on this machine (`make bench`).

Not a test: it prints figures for a human to compare against the token's own speed, so that the
cost of everything between a client and the token (HTTP, JSON, CMS assembly, ledger, TSA round
trips) is visible. It sets up a throwaway dev box (SoftHSM2 token, dev PKI, `esignbox serve`) in
a temporary directory unless `--state-dir` names one to reuse, and stops everything it started on
exit, Ctrl-C included.

The load generator runs on the same machine as the server and competes with it for CPU; the
report says how much CPU each side used so that the figures can be read with that in mind.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from firmware.config import CONFIG_NAME, BoxConfig
from firmware.devbox import init_dev
from firmware.devpki import DevPki, PkiServer
from firmware.store import ClientRegistry, Database
from hsm import KeyAlgorithm, KeyNotFound, SignatureScheme, Token, TokenConfig

ESIGNBOX = str(Path(sys.executable).with_name("esignbox"))
EC_KEY_LABEL = "bench-ec-p256"
BATCH_SIZE = 100
FOREIGN_LOAD_WARNING = 0.2  # cores used by unrelated processes above which a figure is suspect
RESULT_TIMEOUT_S = 600.0  # a step lasts seconds; this only stops a wedged client hanging the bench
PDF_SIZES = (("10 KB", 10 * 1024), ("1 MB", 1024 * 1024), ("20 MB", 20 * 1024 * 1024))
# Fork, not spawn: client processes start in milliseconds without re-importing pyHanko and the
# firmware, and they never touch the PKCS#11 module the parent has loaded.
MP = multiprocessing.get_context("fork")


# -- options ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Options:
    seconds: float  # length of each API load step
    raw_seconds: float  # length of each raw token step
    pdf_runs: int
    client_mode: str  # "processes": one process per client; "threads": one process, a thread each
    state_dir: Path | None
    json_file: Path | None


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, help="duration of each API load step (default 5, --quick 1.5)")
    p.add_argument("--quick", action="store_true", help="short steps and fewer PDF runs (~30 s in all)")
    p.add_argument(
        "--state-dir", type=Path,
        help=f"reuse (or create) this dev box instead of a temporary one; adds a P-256 key "
             f"labelled {EC_KEY_LABEL!r} to its token and a disabled API client to its database",
    )
    p.add_argument("--json", type=Path, dest="json_file", help="also write the figures to this JSON file")
    p.add_argument(
        "--client-mode", choices=("processes", "threads"), default="processes",
        help="processes (default): one process per client, so the client's GIL cannot cap the "
             "figure; threads: all clients as threads of one process",
    )
    args = p.parse_args(argv)
    seconds = args.seconds or (1.5 if args.quick else 5.0)
    return Options(
        seconds=seconds,
        raw_seconds=min(seconds, 1.0 if args.quick else 2.0),
        pdf_runs=2 if args.quick else 3,
        client_mode=args.client_mode,
        state_dir=args.state_dir,
        json_file=args.json_file,
    )


def progress(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- the box under test ----------------------------------------------------------------------------
def free_port() -> int:
    """A port the kernel just handed out, so parallel runs and a running `make run` don't collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class RunningBox:
    config: BoxConfig
    url: str
    api_key: str
    server_pid: int


def prepare_state_dir(requested: Path | None, stack: contextlib.ExitStack) -> BoxConfig:
    """A dev box on free ports; an existing box keeps its PKI port (it is inside its certificates)."""
    if requested is None:
        state_dir = Path(tempfile.mkdtemp(prefix="esignbox-bench-"))
        stack.callback(shutil.rmtree, state_dir, ignore_errors=True)
    else:
        state_dir = requested
    pki_port = None if (state_dir / CONFIG_NAME).exists() else free_port()
    progress(f"dev box in {state_dir}")
    return init_dev(state_dir, pki_port=pki_port, api_port=free_port())


def ensure_ec_key(config: BoxConfig) -> None:
    """A P-256 key next to the box's RSA key, only for the raw token figure."""
    token = Token(config.token_config())
    try:
        try:
            token.key(EC_KEY_LABEL)
        except KeyNotFound:
            token.generate_key(EC_KEY_LABEL, KeyAlgorithm.EC_P256)
    finally:
        token.close()


def start_pki(config: BoxConfig, stack: contextlib.ExitStack) -> None:
    server = PkiServer(DevPki(config.state_dir / "pki", f"http://127.0.0.1:{config.pki_port}"), config.pki_port)
    server.start()
    stack.callback(server.stop)


def add_api_client(config: BoxConfig, stack: contextlib.ExitStack) -> str:
    """A fresh API client, disabled again on exit so a reused state dir keeps no live bench keys."""
    registry = ClientRegistry(Database(config.database))
    client, api_key = registry.add(f"bench-{os.getpid()}-{os.urandom(3).hex()}")
    stack.callback(registry.disable, client.id)
    return api_key


def start_server(config: BoxConfig, stack: contextlib.ExitStack, metered: bool = True) -> tuple[str, int]:
    """`esignbox serve` on a free port, stopped with SIGTERM like systemd would; returns (url, pid).

    ``metered=False`` starts bench/serve_unmetered.py instead: the same API without the ledger.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = config.state_dir / f"bench-serve-{port}.log"
    command = [ESIGNBOX, "--state-dir", str(config.state_dir), "serve", "--port", str(port)]
    if not metered:
        command = [sys.executable, str(Path(__file__).with_name("serve_unmetered.py")), str(config.state_dir), str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(stop_process, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"esignbox serve exited early:\n{log_path.read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return url, process.pid
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"esignbox serve did not become healthy:\n{log_path.read_text()[-4000:]}")


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM first, so `esignbox serve` shuts down the way it does under systemd."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_box(options: Options, stack: contextlib.ExitStack) -> tuple[BoxConfig, Callable[[], RunningBox]]:
    """Set up the state dir now; the returned callable starts the servers when they are needed."""
    config = prepare_state_dir(options.state_dir, stack)
    ensure_ec_key(config)

    def start() -> RunningBox:
        progress("starting dev PKI and esignbox serve")
        start_pki(config, stack)
        api_key = add_api_client(config, stack)
        url, pid = start_server(config, stack)
        return RunningBox(config, url, api_key, pid)

    return config, start


# -- CPU accounting ----------------------------------------------------------------------------------
# Client, server and dev PKI share the machine, and other work may run on it too (a test suite,
# say). Reading who used the CPU during each step tells a server limit from a crowded machine.
CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU time of another process and the processes it started (`esignbox serve`'s
    API workers), from /proc (utime and stime fields)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # ended meanwhile
        return 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return own + sum(process_cpu_seconds(int(child)) for child in children.read_text().split())


def machine_busy_seconds() -> float:
    """CPU seconds all cores together spent not idle since boot (first line of /proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK  # minus idle and iowait


# -- 1. raw token --------------------------------------------------------------------------------
def raw_sign_rate(
    base: TokenConfig, key_label: str, scheme: SignatureScheme, threads: int, seconds: float
) -> tuple[float, float]:
    """Signs/s with ``threads`` threads on a Token whose pool has as many sessions, and the CPU
    cores that other processes used meanwhile (above FOREIGN_LOAD_WARNING the figure is suspect)."""
    token = Token(dataclasses.replace(base, sessions=threads))
    try:
        digest = os.urandom(32)
        token.sign_digest(key_label, digest, "sha256", scheme)  # finds and caches the key handle
        counts = [0] * threads
        deadline = time.monotonic() + seconds

        def loop(index: int) -> None:
            while time.monotonic() < deadline:
                token.sign_digest(key_label, digest, "sha256", scheme)
                counts[index] += 1

        start, own0, busy0 = time.monotonic(), time.process_time(), machine_busy_seconds()
        workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.monotonic() - start
        foreign = (machine_busy_seconds() - busy0) - (time.process_time() - own0)
        return sum(counts) / elapsed, max(0.0, foreign / elapsed)
    finally:
        token.close()


def bench_raw_token(config: BoxConfig, seconds: float) -> dict[str, float]:
    """Signs/s per case, plus the most CPU that other processes took during any case."""
    base = config.token_config()
    cases = {
        "rsa2048_1_session_1_thread": (config.key_label, SignatureScheme.RSA_PKCS1V15, 1),
        "rsa2048_2_sessions_2_threads": (config.key_label, SignatureScheme.RSA_PKCS1V15, 2),
        "p256_1_session_1_thread": (EC_KEY_LABEL, SignatureScheme.ECDSA, 1),
        "p256_2_sessions_2_threads": (EC_KEY_LABEL, SignatureScheme.ECDSA, 2),
    }
    results = {"foreign_cpu_cores_max": 0.0}
    for name, (label, scheme, threads) in cases.items():
        progress(f"raw token: {name}")
        results[name], foreign = raw_sign_rate(base, label, scheme, threads, seconds)
        results["foreign_cpu_cores_max"] = max(results["foreign_cpu_cores_max"], foreign)
    return results


# -- 2-4. API load ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LoadStep:
    name: str
    path: str
    level: str
    clients: int
    batch: int = 0  # 0: one hash per POST /v1/signatures; n: n hashes per /v1/signatures/batch


@dataclasses.dataclass
class WorkerResult:
    latencies: list[float]
    items: int
    errors: list[str]
    cpu_s: float
    start: float
    end: float


def request_body(step: LoadStep) -> dict:
    """A fresh random hash per request, as a real client would send."""
    body = {"hash_algorithm": "sha256", "level": step.level, "profile": "PAdES"}
    if step.batch:
        body["hashes"] = [base64.b64encode(os.urandom(32)).decode() for _ in range(step.batch)]
    else:
        body["hash"] = base64.b64encode(os.urandom(32)).decode()
    return body


def post_once(session: requests.Session, url: str, step: LoadStep) -> str | None:
    """One request; returns an error description, or None on success."""
    try:
        response = session.post(url, json=request_body(step), timeout=60)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.status_code != 201:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    return None


def drive(session: requests.Session, url: str, step: LoadStep, deadline: float, out: WorkerResult) -> None:
    """Closed loop: the next request leaves as soon as the previous answer is in."""
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        error = post_once(session, url, step)
        elapsed = time.perf_counter() - t0
        if error is None:
            out.latencies.append(elapsed)
            out.items += step.batch or 1
        else:
            out.errors.append(error)


def client_process(box: RunningBox, step: LoadStep, threads: int, seconds: float, barrier, results) -> None:
    """A load-generating process: ``threads`` clients, each with its own keep-alive session.

    Each session sends one untimed request first, so connection set-up and the server's first-use
    costs (revocation cache, TSA connection) stay out of the measured window.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    url = box.url + step.path
    sessions = []
    for _ in range(threads):
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {box.api_key}"
        error = post_once(session, url, step)
        if error is not None:
            barrier.abort()
            results.put(WorkerResult([], 0, [f"warm-up: {error}"], 0.0, 0.0, 0.0))
            return
        sessions.append(session)
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        return  # another client failed its warm-up; the parent reports that one
    cpu0, start = time.process_time(), time.monotonic()
    outs = [WorkerResult([], 0, [], 0.0, start, 0.0) for _ in sessions]  # one per thread: no shared counters
    workers = [
        threading.Thread(target=drive, args=(session, url, step, start + seconds, out))
        for session, out in zip(sessions, outs, strict=False)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(WorkerResult(
        latencies=[x for out in outs for x in out.latencies],
        items=sum(out.items for out in outs),
        errors=[e for out in outs for e in out.errors],
        cpu_s=time.process_time() - cpu0,
        start=start,
        end=time.monotonic(),
    ))


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def run_load(box: RunningBox, step: LoadStep, options: Options) -> dict:
    """One fixed-duration step; returns throughput, latency percentiles and who used the CPU."""
    procs, threads = (step.clients, 1) if options.client_mode == "processes" else (1, step.clients)
    barrier, results = MP.Barrier(procs + 1), MP.Queue()
    children = [
        MP.Process(target=client_process, args=(box, step, threads, options.seconds, barrier, results))
        for _ in range(procs)
    ]
    try:
        for child in children:
            child.start()
        outcome = collect_results(box, barrier, results, procs)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join()
    return summarise(step, *outcome)


def collect_results(box: RunningBox, barrier, results, procs: int) -> tuple[list[WorkerResult], float, float]:
    """Release the clients together, wait for them, and measure the server's CPU meanwhile."""
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        failure = results.get(timeout=10)
        raise RuntimeError(f"a load client could not start: {failure.errors[0]}") from None
    server0, busy0 = process_cpu_seconds(box.server_pid), machine_busy_seconds()
    outputs = [results.get(timeout=RESULT_TIMEOUT_S) for _ in range(procs)]
    return outputs, process_cpu_seconds(box.server_pid) - server0, machine_busy_seconds() - busy0


def summarise(step: LoadStep, outputs: list[WorkerResult], server_cpu_s: float, machine_cpu_s: float) -> dict:
    window = max(o.end for o in outputs) - min(o.start for o in outputs)
    latencies = sorted(x * 1000 for o in outputs for x in o.latencies)
    errors = [e for o in outputs for e in o.errors]
    client_cpu_s = sum(o.cpu_s for o in outputs)
    return {
        "name": step.name,
        "level": step.level,
        "clients": step.clients,
        "batch": step.batch or 1,
        "requests": len(latencies),
        "per_second": sum(o.items for o in outputs) / window,
        "p50_ms": percentile(latencies, 50) if latencies else None,
        "p90_ms": percentile(latencies, 90) if latencies else None,
        "p99_ms": percentile(latencies, 99) if latencies else None,
        "server_cpu_cores": server_cpu_s / window,
        "client_cpu_cores": client_cpu_s / window,
        "other_cpu_cores": max(0.0, machine_cpu_s - server_cpu_s - client_cpu_s) / window,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def api_steps() -> list[LoadStep]:
    single, batch = "/v1/signatures", "/v1/signatures/batch"
    return [
        LoadStep("hash B-B", single, "B-B", 1),
        LoadStep("hash B-B", single, "B-B", 2),
        LoadStep("hash B-B", single, "B-B", 8),
        LoadStep(f"batch×{BATCH_SIZE} B-B", batch, "B-B", 1, BATCH_SIZE),
        LoadStep(f"batch×{BATCH_SIZE} B-B", batch, "B-B", 2, BATCH_SIZE),
        LoadStep("hash B-T", single, "B-T", 1),
        LoadStep("hash B-T", single, "B-T", 8),
        LoadStep("hash B-LT", single, "B-LT", 8),
    ]


def bench_api(box: RunningBox, options: Options) -> list[dict]:
    results = []
    for step in api_steps():
        progress(f"API: {step.name}, {step.clients} client(s), {options.seconds:g} s")
        results.append(run_load(box, step, options))
    return results


# -- 5. PDF signing --------------------------------------------------------------------------------
def make_pdf(size: int) -> bytes:
    """A one-page PDF padded to about ``size`` bytes with a stream of random (incompressible) bytes.

    The filler hangs off the catalogue under a private key, so every reader keeps it but none
    renders it.
    """
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

    writer = PdfFileWriter()
    text = generic.StreamObject(stream_data=b"BT /F1 24 Tf 72 720 Td (E-signature Box bench) Tj ET")
    font = generic.DictionaryObject({
        generic.pdf_name("/Type"): generic.pdf_name("/Font"),
        generic.pdf_name("/Subtype"): generic.pdf_name("/Type1"),
        generic.pdf_name("/BaseFont"): generic.pdf_name("/Helvetica"),
    })
    resources = generic.DictionaryObject({
        generic.pdf_name("/Font"): generic.DictionaryObject({generic.pdf_name("/F1"): font}),
    })
    writer.insert_page(PageObject(writer.add_object(text), (0, 0, 595, 842), resources))
    filler = generic.StreamObject(stream_data=os.urandom(max(0, size - 2048)))
    writer.root[generic.pdf_name("/EsignboxBenchFiller")] = writer.add_object(filler)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def sign_via_api(box: RunningBox, pdf: bytes, runs: int) -> list[float] | str:
    """Seconds per `POST /v1/pdf/sign`, or why the endpoint could not be measured."""
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {box.api_key}", "Content-Type": "application/pdf"})
    timings = []
    for _ in range(runs):
        t0 = time.perf_counter()
        response = session.post(f"{box.url}/v1/pdf/sign", params={"level": "B-B"}, data=pdf, timeout=300)
        elapsed = time.perf_counter() - t0
        if response.status_code == 404:
            return "PDF endpoint not available (HTTP 404)"
        if not response.ok or not response.content.startswith(b"%PDF"):
            return f"PDF endpoint failed: HTTP {response.status_code} {response.text[:200]!r}"
        timings.append(elapsed)
    return timings


@contextlib.contextmanager
def direct_pdf_signer(config: BoxConfig) -> Iterator[Callable[[bytes], bytes]]:
    """pyHanko in this process on the same token and key: what the API would cost without HTTP."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    from firmware.certificates import load_certificates
    from firmware.signing import TokenSigner

    token = Token(config.token_config())
    signer = TokenSigner(token, config.key_label, load_certificates(config.chain_file), config.prefer_pss)
    metadata = signers.PdfSignatureMetadata(field_name="BenchSignature", subfilter=fields.SigSeedSubFilter.PADES)

    def sign(pdf: bytes) -> bytes:
        out = io.BytesIO()
        signers.PdfSigner(metadata, signer=signer).sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)), output=out)
        return out.getvalue()

    try:
        yield sign
    finally:
        token.close()


def time_runs(function: Callable[[], object], runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        t0 = time.perf_counter()
        function()
        timings.append(time.perf_counter() - t0)
    return timings


def bench_pdf(box: RunningBox, options: Options) -> dict:
    rows = []
    api_note = None
    with direct_pdf_signer(box.config) as sign_direct:
        sign_direct(make_pdf(10 * 1024))  # warm-up: imports, key handle, pyHanko's first-use caches
        for label, size in PDF_SIZES:
            progress(f"PDF: {label}")
            pdf = make_pdf(size)
            direct = statistics.median(time_runs(lambda pdf=pdf: sign_direct(pdf), options.pdf_runs))
            api = None
            if api_note is None:
                outcome = sign_via_api(box, pdf, options.pdf_runs)
                if isinstance(outcome, str):
                    api_note = outcome
                else:
                    api = statistics.median(outcome)
            rows.append({"size": label, "bytes": len(pdf), "api_s": api, "direct_s": direct,
                         "api_over_direct": None if api is None else api / direct})
    return {"runs": options.pdf_runs, "api_note": api_note, "rows": rows}


# -- report ------------------------------------------------------------------------------------------
def machine_facts(options: Options) -> dict:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor() or "unknown",
    )
    softhsm = subprocess.run(["softhsm2-util", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "softhsm": softhsm,
        "client_mode": options.client_mode,
        "seconds_per_step": options.seconds,
    }


def fmt(value: float | None, width: int, decimals: int) -> str:
    """``value`` right-aligned in ``width``, or a dash when there is no figure."""
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{decimals}f}"


def report_header(m: dict) -> list[str]:
    mode = ("one process per client, each with its own keep-alive requests.Session" if m["client_mode"] == "processes"
            else "one process, one thread per client, each with its own keep-alive requests.Session")
    return [
        "E-signature Box benchmark",
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, SoftHSM {m['softhsm']}",
        f"NOTE: the load generator runs on the same {m['cpus']}-core machine as the server and the dev PKI,",
        "      so they compete for CPU; the cpu columns show who used how many cores during each step.",
        f"load generator: {mode}; {m['seconds_per_step']:g} s per step",
    ]


def report_raw(raw: dict) -> list[str]:
    rows = [
        ("RSA-2048 CKM_RSA_PKCS over SHA-256 DigestInfo", "1 thread, 1 session ", "rsa2048_1_session_1_thread"),
        ("", "2 threads, 2 sessions", "rsa2048_2_sessions_2_threads"),
        ("ECDSA P-256 CKM_ECDSA over SHA-256 digest", "1 thread, 1 session ", "p256_1_session_1_thread"),
        ("", "2 threads, 2 sessions", "p256_2_sessions_2_threads"),
    ]
    lines = ["1. Raw token: hsm.Token.sign_digest in the bench process, same token"]
    lines += [f"   {what:46} {how}  {raw[key]:7.0f} signs/s" for what, how, key in rows]
    rsa = raw["rsa2048_2_sessions_2_threads"] / raw["rsa2048_1_session_1_thread"]
    ec = raw["p256_2_sessions_2_threads"] / raw["p256_1_session_1_thread"]
    lines.append(f"   2 sessions vs 1: RSA x{rsa:.2f}, P-256 x{ec:.2f}")
    if raw["foreign_cpu_cores_max"] > FOREIGN_LOAD_WARNING:
        lines.append(f"   WARNING: other processes used up to {raw['foreign_cpu_cores_max']:.1f} cores meanwhile;"
                     " these figures may be low")
    return lines


def report_api(api: list[dict], raw: dict) -> list[str]:
    lines = [
        "2-4. Through the API, PAdES profile (batch rows: hashes/s; latency is per HTTP call)",
        f"   {'step':15} {'clients':>7} {'per s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
        f" {'srv cpu':>8} {'cli cpu':>8} {'oth cpu':>8} {'errors':>6}",
    ]
    for r in api:
        lines.append(
            f"   {r['name']:15} {r['clients']:>7} {r['per_second']:8.1f} {fmt(r['p50_ms'], 8, 1)}"
            f" {fmt(r['p90_ms'], 8, 1)} {fmt(r['p99_ms'], 8, 1)} {r['server_cpu_cores']:8.2f}"
            f" {r['client_cpu_cores']:8.2f} {r['other_cpu_cores']:8.2f} {r['errors']:>6}"
        )
    lines += [f"   first error in {r['name']} x{r['clients']}: {r['first_error']}" for r in api if r["first_error"]]
    crowded = max(r["other_cpu_cores"] for r in api if r["level"] == "B-B")
    if crowded > FOREIGN_LOAD_WARNING:  # B-B needs no PKI, so this CPU belongs to someone else
        lines.append(f"   WARNING: other processes used up to {crowded:.1f} cores during B-B steps;"
                     " these figures may be low")
    single = max(r["per_second"] for r in api if r["level"] == "B-B" and r["batch"] == 1)
    batch = max(r["per_second"] for r in api if r["batch"] > 1)
    pool = raw["rsa2048_2_sessions_2_threads"]
    return [*lines, "   cpu columns in cores: srv = esignbox serve, cli = load generator, oth = everything else" " (the dev PKI, and any other load on the machine)", "   in the B-T/B-LT rows oth cpu is mostly the dev TSA/OCSP: certomancer's Werkzeug server," " which answers one request at a time", f"   API/raw token (RSA, 2 sessions, {pool:.0f}/s): best single-hash B-B {single:.0f}/s = {single / pool:.1%};" f" best batch {batch:.0f} hashes/s = {batch / pool:.1%}"]


def report_pdf(pdf: dict) -> list[str]:
    lines = [
        f"5. PDF signing, PAdES B-B, seconds (median of {pdf['runs']} runs)",
        "   direct = pyHanko PdfSigner + TokenSigner in the bench process, same token and key",
        f"   {'size':8} {'bytes':>10} {'API':>8} {'direct':>8} {'API/direct':>11}",
    ]
    lines += [
        f"   {r['size']:8} {r['bytes']:>10} {fmt(r['api_s'], 8, 3)} {r['direct_s']:8.3f}"
        f" {fmt(r['api_over_direct'], 10, 2)}x"
        for r in pdf["rows"]
    ]
    if pdf["api_note"]:
        lines.append(f"   {pdf['api_note']}")
    return lines


# -- 6. wrk and metering/audit overhead -------------------------------------------------------------
def bench_wrk(box: RunningBox, options: Options, stack: contextlib.ExitStack) -> dict | None:
    """B-B through the API driven by wrk (C), so the load generator takes almost no CPU; then the
    same against a server without metering and audit, for their overhead."""
    if shutil.which("wrk") is None:
        return None
    unmetered_url, _ = start_server(box.config, stack, metered=False)
    digest = base64.b64encode(hashlib.sha256(b"wrk").digest()).decode()
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = \'{{"hash_algorithm":"sha256","hash":"{digest}","level":"B-B"}}\'\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {box.api_key}"\n'
    )
    results = {}
    for name, url, connections in (("1", box.url, 1), ("8", box.url, 8), ("8 unmetered", unmetered_url, 8)):
        progress(f"wrk: B-B with {name} connection(s)")
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(3, int(options.seconds))}s", "--latency", "-s", str(script),
             f"{url}/v1/signatures"], capture_output=True, text=True, check=True).stdout
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p99 = re.search(r"99%\s+([\d.]+)(ms|s|us)", out)
        scale = {"ms": 1, "s": 1000, "us": 0.001}[p99.group(2)]
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        results[name] = {"per_s": rate, "p99_ms": float(p99.group(1)) * scale,
                                "errors": int(non2xx.group(1)) if non2xx else 0}
    return results


def report_extra(wrk: dict | None) -> list[str]:
    lines = ["6. B-B through the API with wrk as the load generator (C, ~no CPU of its own)"]
    if wrk is None:
        return [*lines, "   wrk not installed (apt-get install wrk)"]
    for name, r in wrk.items():
        lines.append(f"   {name:>11} connection(s): {r['per_s']:8.1f} signatures/s   p99 {r['p99_ms']:6.1f} ms"
                     f"   non-2xx {r['errors']}")
    overhead = 100 * (1 - wrk["8"]["per_s"] / wrk["8 unmetered"]["per_s"])
    lines.append(f"   metering + audit log overhead at 8 connections: {overhead:.1f} %")
    return lines


def report(figures: dict) -> str:
    sections = [
        report_header(figures["machine"]),
        report_raw(figures["raw_token"]),
        report_api(figures["api"], figures["raw_token"]),
        report_pdf(figures["pdf"]),
        report_extra(figures["wrk"]),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections)


# -- main --------------------------------------------------------------------------------------------
def run(options: Options) -> dict:
    with contextlib.ExitStack() as stack:
        config, start = start_box(options, stack)
        figures = {"machine": machine_facts(options)}
        figures["raw_token"] = bench_raw_token(config, options.raw_seconds)
        box = start()
        figures["api"] = bench_api(box, options)
        figures["pdf"] = bench_pdf(box, options)
        figures["wrk"] = bench_wrk(box, options, stack)
        progress("stopping servers")
    return figures


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C raises KeyboardInterrupt; make SIGTERM unwind the same way so the ExitStack stops
    # the servers and removes the temporary box.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = parse_args(argv)
    t0 = time.monotonic()
    try:
        figures = run(options)
    except KeyboardInterrupt:
        progress("interrupted; servers stopped")
        return 130
    figures["wall_seconds"] = time.monotonic() - t0
    print(report(figures))
    print(f"\n(total bench time {figures['wall_seconds']:.0f} s)")
    if options.json_file:
        options.json_file.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
