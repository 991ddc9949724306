"""A flood of requests with bad API keys must not flood the durable audit log.

Anyone who reaches the port can send a wrong key; each refusal used to be its own fsynced,
hash-chained entry. Now the first refusal per peer, reason and window is an entry and the rest
become one summary entry per window, so the count survives and the log stays readable.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from firmware.store import audit
from firmware.store.db import open_connection

from .support import Api, BoxProcess, box_toml_with

FLOOD = 2000


@contextlib.contextmanager
def audit_settings(state_dir: Path, **settings: object) -> Iterator[None]:
    """box.toml's [audit] section with ``settings`` while the block runs (a serving box follows box.toml)."""
    path = state_dir / "box.toml"
    original = path.read_text()
    path.write_text(box_toml_with(original, {"audit": settings}))
    try:
        yield
    finally:
        path.write_text(original)


def _flood(url: str, requests: int, workers: int = 8) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        api = Api(url, "esb_nobody_nothing")
        for _ in range(n):
            status = api.post("/v1/signatures", json={}).status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=work, args=(requests // workers,)) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return statuses


def _refusals_counted(entries: list[dict], error: str) -> int:
    """Refusals with ``error`` from 127.0.0.1 that ``entries`` account for: one each, or a summary's count."""
    total = 0
    for entry in entries:
        details = entry["details"]
        if details.get("error") != error or details.get("peer") != "127.0.0.1":
            continue
        if entry["action"] == "refusal":
            total += 1
        elif entry["action"] == "refusal.summary":
            total += details["refusals"]
    return total


def test_a_flood_of_bad_keys_becomes_a_few_summary_entries(box_config, pki_server, session_box_stopped):
    with audit_settings(box_config.state_dir, refusal_window_seconds=1):
        flooded = BoxProcess(box_config.state_dir).start()
        try:
            conn = open_connection(box_config.database)
            before, _ = audit.head(conn)
            flood_began = time.time()  # wall clock, as the windows are
            started = time.monotonic()
            statuses = _flood(flooded.url, FLOOD)
            elapsed = time.monotonic() - started
            assert statuses == [401] * FLOOD
            time.sleep(1.2)  # the last window closes; the next write of the box summarises it
            assert Api(flooded.url, None).post("/v1/signatures", json={}).status_code == 401
            # Earlier tests' refusals (other windows) are summarised by the same commits: not this flood's.
            entries = [e for e in audit.export(conn, before) if e["action"] != "refusal.summary"
                       or datetime.fromisoformat(e["details"]["window_end"]).timestamp() > flood_began]
            windows = int(elapsed) + 2
            assert len(entries) <= 2 * windows + 1, [(e["action"], e["at"], e["details"].get("window_start"),
                                                       e["details"].get("refusals")) for e in entries]
            assert _refusals_counted(entries, "invalid_api_key") == FLOOD
            summary = next(e["details"] for e in entries if e["action"] == "refusal.summary")
            assert summary["first_at"] <= summary["last_at"] and summary["status"] == 401
            assert audit.verify(conn).ok
        finally:
            flooded.stop()
