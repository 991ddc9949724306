"""The bench's report: markdown tables, each rate beside the rate that bounds it, then the issue's
targets, each met or not and, where not, what the measurements say bounds it."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["report"]

PI_WORKERS = 4  # a Raspberry Pi 4 has 4 cores: [api] workers defaults to one per core
PI_BUDGET_MB = 1024  # of its 2 GB: the rest is the OS, nginx, the page cache and headroom


def _mb(kb: float) -> str:
    return f"{kb / 1024:.0f}"


def _num(value: float, decimals: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{decimals}f}"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A markdown table, readable as text too: the first ``left`` columns (names) left-aligned,
    the others (figures) right-aligned."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i < left else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join(("-" * (w + 2)) if i < left else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return [line(header), rule, *(line(r) for r in rows)]


class _Bases:
    """The rates the API's figures are divided by: the token's in N processes, the TSA's alone."""

    def __init__(self, figures: dict[str, Any]) -> None:
        cores = figures["machine"]["cpus"]
        raw = figures["raw"]
        self.token = {key: raw[key][str(cores)]["per_s"] for key in ("rsa", "p256")}
        self.token_ms = {key: 1000 / raw[key]["1"]["per_s"] for key in ("rsa", "p256")}
        self.tsa = max(s["per_s"] for s in figures["tsa"])
        self.names = {"rsa": "raw RSA", "p256": "raw P-256", "tsa": "TSA alone"}

    def ratio(self, step: dict[str, Any]) -> str:
        basis = step["basis"]
        base = self.tsa if basis == "tsa" else self.token[basis]
        return f"{step['per_s'] / base:.0%} of {self.names[basis]}"

    def token_share(self, step: dict[str, Any]) -> float | None:
        """The share of the box's CPU that token signing took (from the token's single-process time)."""
        basis = "p256" if step["basis"] == "p256" else "rsa"
        if step["server_cores"] <= 0:
            return None
        return step["per_s"] * self.token_ms[basis] / 1000 / step["server_cores"]


def _split(values: list[float] | list[int], decimals: int = 0) -> str:
    return "/".join(f"{v:.{decimals}f}" for v in values) or "-"


def _step_rows(steps: list[dict[str, Any]], bases: _Bases) -> list[list[str]]:
    rows = []
    for s in steps:
        share = bases.token_share(s)
        rows.append([
            s["name"], str(s["connections"]), f"{s['per_s']:.0f}", _num(s["p50_ms"], 1), _num(s["p99_ms"], 1),
            f"{s['server_cores']:.2f}", f"{s['wrk_cores']:.2f}", f"{s['pki_cores']:.2f}", f"{s['other_cores']:.2f}",
            "-" if share is None or s["basis"] == "tsa" else f"{share:.0%}", bases.ratio(s),
            _split(s["worker_cores"], 2), _split(s["worker_connections"]), str(s["errors"]),
        ])
    return rows


_STEP_HEADER = ["step", "conns", "per s", "p50 ms", "p99 ms", "box cpu", "wrk cpu", "PKI cpu", "other cpu",
                "token share", "ratio", "cpu per worker", "conns per worker", "errors"]


def _bound(step: dict[str, Any], bases: _Bases, cores: int) -> str:
    """What a throughput or latency figure is bounded by, as measured during its step."""
    used = step["server_cores"] + step["wrk_cores"] + step["pki_cores"] + step["other_cores"]
    per_signature = 1000 * step["server_cores"] / step["per_s"] if step["per_s"] else 0.0
    share = bases.token_share(step)
    text = (f"CPU {used:.2f} of {cores} cores (box {step['server_cores']:.2f}, wrk {step['wrk_cores']:.2f},"
            f" PKI {step['pki_cores']:.2f}, other {step['other_cores']:.2f});"
            f" box CPU {per_signature:.2f} ms per signature"
            f" ({step['server_system_cores'] / max(step['server_cores'], 1e-9):.0%} of it in the kernel)")
    if share is not None and step["basis"] != "tsa":
        text += f", token signing {share:.0%} of it"
    if len(step["worker_cores"]) > 1:
        text += f"; workers' CPU {_split(step['worker_cores'], 2)}, connections {_split(step['worker_connections'])}"
    if used >= 0.9 * cores:
        text += " — the CPU is saturated: Python time per request (see --profile) and the machine's other load bound it"
    return text


def _targets(figures: dict[str, Any], bases: _Bases) -> list[list[str]]:
    cores = figures["machine"]["cpus"]
    api = figures["api"]
    single = {s["connections"]: s for s in api if s["name"] == "hash B-B"}
    batch = max((s for s in api if s["name"].startswith("batch")), key=lambda s: s["per_s"])
    bt = next(s for s in api if s["name"] == "hash B-T")
    p256 = max(figures["p256"], key=lambda s: s["per_s"])
    memory = figures["memory"]
    workers = len(memory["started"]["worker_pss_kb"])
    per_worker_peak = (memory["peak_pss_kb"] - memory["started"]["parent_pss_kb"]) / max(1, workers)
    pi_mb = (memory["started"]["parent_pss_kb"] + PI_WORKERS * per_worker_peak) / 1024
    pdf = {r["size"]: r for r in figures["pdf"]}
    overhead = figures["metering"]["overhead"]

    def row(target: str, measured: str, met: bool, bound: str) -> list[str]:
        return [target, measured, "yes" if met else "NO", bound]

    rows = [
        row("B-B single hash, 8 conns >= 50 % of raw RSA N-process", bases.ratio(single[8]),
            single[8]["per_s"] >= 0.5 * bases.token["rsa"], _bound(single[8], bases, cores)),
        row("batch >= 80 % of raw RSA N-process", f"{bases.ratio(batch)} ({batch['connections']} conns)",
            batch["per_s"] >= 0.8 * bases.token["rsa"], _bound(batch, bases, cores)),
        row("p99 <= 20 ms at 8 conns", f"{single[8]['p99_ms']:.1f} ms (p50 {single[8]['p50_ms']:.1f})",
            single[8]["p99_ms"] <= 20, _bound(single[8], bases, cores)),
        row("P-256 B-B single hash >= 2,000/s", f"{p256['per_s']:.0f}/s ({p256['connections']} conns)",
            p256["per_s"] >= 2000, _bound(p256, bases, cores)),
        row("B-T at 32 conns >= 70 % of the TSA alone", bases.ratio(bt), bt["per_s"] >= 0.7 * bases.tsa,
            f"dev PKI ({cores} processes) {bt['pki_cores']:.2f} cores during B-T,"
            f" {max(s['pki_cores'] for s in figures['tsa']):.2f} alone; " + _bound(bt, bases, cores)),
        row("metering + audit overhead < 10 %", f"{overhead:.1%}", overhead < 0.10,
            "the ledger's group commit (SQLite, synchronous=FULL) and the audit chain per request"),
        *(row(f"PDF {size} via API <= 1.3x direct", f"{pdf[size]['api_over_direct']:.2f}x",
              pdf[size]["api_over_direct"] <= 1.3,
              f"API - direct = {pdf[size]['api_p50_ms'] - pdf[size]['direct_p50_ms']:.0f} ms at p50: HTTP both ways,"
              " the box's checks of the PDF and of earlier signatures, the ledger commit")
          for size in ("10 KB", "1 MB") if size in pdf),
        row(f"box fits a Raspberry Pi 4 with 2 GB ({PI_WORKERS} workers, <= {PI_BUDGET_MB} MB PSS under load)",
            f"~{pi_mb:.0f} MB (parent + {PI_WORKERS} x worker peak)", pi_mb <= PI_BUDGET_MB,
            "Python workers each load pyHanko, asn1crypto and cryptography"),
    ]
    return rows


def _sections(figures: dict[str, Any]) -> list[list[str]]:
    m = figures["machine"]
    cores = m["cpus"]
    bases = _Bases(figures)
    load = lambda values: ", ".join(f"{v:.2f}" for v in values)  # noqa: E731
    header = [
        "# E-signature Box benchmark",
        "",
        f"Machine: {cores} CPUs ({m['cpu_model']}), Python {m['python']}, SoftHSM {m['softhsm']}; "
        f"{m['seconds_per_step']} s per load step; load average {load(m['load_before'])} before, "
        f"{load(m['load_after'])} after (1/5/15 min).",
        f"wrk (the load generator), the box and the dev PKI share these {cores} cores. CPU columns are cores used"
        " during the step: box = `esignbox serve` (parent and workers), PKI = the dev TSA/OCSP/CRL server,"
        " other = everything else on the machine. A high *other* means a crowded machine: figures are low."
        f" The dev PKI runs {cores} processes, so that its TSA answers {cores} requests at once.",
    ]
    raw = figures["raw"]
    raw_rows = [[name, f"{raw[key]['1']['per_s']:.0f}", f"{raw[key][str(cores)]['per_s']:.0f}",
                 f"{raw[key][str(cores)]['per_s'] / raw[key]['1']['per_s']:.2f}x",
                 f"{raw[key][str(cores)]['cpu_cores']:.2f}"]
                for key, name in (("rsa", "RSA-2048 CKM_RSA_PKCS"), ("p256", "P-256 CKM_ECDSA"))]
    sections = [header, [
        "## 1. Raw token: `hsm.Token.sign_digest` in a loop, signs/s", "",
        *_table(["key", "1 process", f"{cores} processes", "scaling", f"cores used ({cores} proc.)"], raw_rows),
    ]]
    sections.append([
        f"## 2. Through the API: wrk, {cores} workers, PAdES profile (batch rows: hashes/s)", "",
        "*token share*: the share of the box's CPU that signing on the token took, estimated as signatures ×"
        " the token's time per signature in one process (section 1; over 100 % when the machine was busier then"
        " than during the step); *ratio*: the rate over the raw token's in N processes (B-T/B-LT: over the dev"
        " TSA's own rate, measured alone).", "",
        *_table(_STEP_HEADER, _step_rows(figures["api"] + figures["p256"] + figures["tsa"], bases)),
    ])
    meter = figures["metering"]
    sections.append([
        "## 3. Metering + audit log overhead: B-B at 8 connections", "",
        f"metered {meter['metered'][0]['per_s']:.0f} and {meter['metered'][1]['per_s']:.0f}/s (before and after),"
        f" unmetered (bench/serve_unmetered.py, same workers) {meter['unmetered']['per_s']:.0f}/s:"
        f" overhead {meter['overhead']:.1%}",
    ])
    pdf_rows = [[r["size"], str(r["runs"]), f"{r['api_p50_ms']:.0f}", f"{r['api_p99_ms']:.0f}",
                 f"{r['direct_p50_ms']:.0f}", f"{r['direct_p99_ms']:.0f}", f"{r['api_over_direct']:.2f}x"]
                for r in figures["pdf"]]
    sections.append([
        "## 4. PDF signing, PAdES B-B, one at a time, ms (direct: pyHanko PdfSigner + TokenSigner, same key)", "",
        *_table(["size", "runs", "API p50", "API p99", "direct p50", "direct p99", "API/direct p50"], pdf_rows),
        "", "p99 is nearest-rank: with fewer than 100 runs it is the slowest run.",
    ])
    memory = figures["memory"]
    started, after = memory["started"], memory["after_load"]
    sections.append([
        f"## 5. Memory of the whole box (parent + {len(started['worker_pss_kb'])} workers), MB", "",
        *_table(["when", "PSS", "RSS", "parent PSS", "workers' PSS"], [
            ["started, idle", _mb(started["pss_kb"]), _mb(started["rss_kb"]), _mb(started["parent_pss_kb"]),
             "/".join(_mb(v) for v in started["worker_pss_kb"])],
            ["peak under load (section 2)", _mb(memory["peak_pss_kb"]), _mb(memory["peak_rss_kb"]), "", ""],
            ["idle after load", _mb(after["pss_kb"]), _mb(after["rss_kb"]), _mb(after["parent_pss_kb"]),
             "/".join(_mb(v) for v in after["worker_pss_kb"])],
        ]),
        "", "PSS counts each shared page once across the processes (what the box really takes); RSS counts it"
        " in each.",
    ])
    sweep_rows = []
    for entry in figures["sweep"]:
        by_conns = {s["connections"]: s for s in entry["steps"]}
        cells = [str(entry["workers"])]
        for c in (8, 32):
            s = by_conns[c]
            cells += [f"{s['per_s']:.0f}", f"{s['p99_ms']:.1f}", f"{s['server_cores']:.2f}",
                      _split(s["worker_connections"])]
        cells += [_mb(entry["idle"]["pss_kb"]), _mb(max(s["peak_pss_kb"] for s in entry["steps"]))]
        sweep_rows.append(cells)
    sections.append([
        "## 6. Workers sweep: B-B single hash", "",
        *_table(["workers", "8c per s", "8c p99 ms", "8c box cpu", "8c conns/worker", "32c per s", "32c p99 ms",
                 "32c box cpu", "32c conns/worker", "idle PSS MB", "peak PSS MB"], sweep_rows),
    ])
    targets = _targets(figures, bases)
    sections.append([
        "## 7. Targets (RSA-2048 unless named)", "",
        *_table(["target", "measured", "met"], [t[:3] for t in targets], left=2),
        "", "What bounds each target not met, as measured in its step:", "",
        *(f"- {t[0]}: {t[3]}" for t in targets if t[2] == "NO"),
    ])
    profile = figures.get("profile")
    if profile:
        sections.append([
            "## 8. Profile: one worker (workers=1), B-B at 8 connections, py-spy --gil", "",
            f"{profile['gil_ms_per_request']:.2f} ms of GIL-held Python time per request ({profile['samples']} samples,"
            f" {profile['requests']} requests). Inclusive: the function and what it calls.", "",
            *_table(["function (inclusive)", "ms/request", "share"],
                    [[r["function"], f"{r['ms']:.3f}", f"{r['share']:.0%}"] for r in profile["inclusive"]]),
            "",
            *_table(["function (self)", "ms/request", "share"],
                    [[r["function"], f"{r['ms']:.3f}", f"{r['share']:.0%}"] for r in profile["self"]]),
        ])
    sections.append([f"(total bench time {figures['wall_seconds']:.0f} s)"])
    return sections


def report(figures: dict[str, Any]) -> str:
    return "\n\n".join("\n".join(lines) for lines in _sections(figures))
