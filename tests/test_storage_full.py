"""A full state partition: signing answers 503 storage_full, releases nothing, and recovers.

The box's database lives on a real, small tmpfs that the test fills with a file; nothing is
simulated. The dashboard's storage warning is read from the same filesystem.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.store.clients import ClientRegistry
from firmware.store.db import Database, open_connection
from firmware.store.refusals import refused_since
from firmware.store.storage import StorageBudget
from webui.pages.dashboard import storage_warnings

from .support import Api, BoxProcess

MB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs, unmounted after the test whatever happened."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def box_on_small_disk(box_config, pki_server, small_disk: Path) -> Iterator[tuple[BoxProcess, str]]:
    """A box whose state directory (and so its database) is on ``small_disk``; same token and PKI."""
    state = small_disk / "state"
    state.mkdir()
    for name in ("box.toml", "softhsm2.conf", "box-chain.pem", "trust-roots.pem"):
        shutil.copy(box_config.state_dir / name, state / name)
    for name in ("secrets", "chains"):
        shutil.copytree(box_config.state_dir / name, state / name)
    db = Database(state / "box.db")
    _, key = ClientRegistry(db).add("on-a-small-disk")
    db.connect().close()
    process = BoxProcess(state)
    process.log_path = small_disk.parent / "serve.log"  # the log must not need the full disk
    process.start()
    try:
        yield process, key
    finally:
        process.stop()


def _fill(disk: Path) -> Path:
    """Write a file until the filesystem refuses another byte."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for chunk in (64 * 1024, 4096, 512, 1):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def _sign(api: Api, n: int):
    digest = hashlib.sha256(b"disk %d" % n).digest()
    return api.post("/v1/signatures", json={"hash_algorithm": "sha256", "hash": base64.b64encode(digest).decode(),
                                            "level": "B-B"})


def _signatures(database: Path) -> int:
    conn = open_connection(database)
    try:
        return conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0]
    finally:
        conn.close()


def test_a_full_disk_refuses_signing_with_503_and_recovers(box_on_small_disk, small_disk):
    box, key = box_on_small_disk
    api = Api(box.url, key)
    assert _sign(api, 0).status_code == 201
    filler = _fill(small_disk)
    released = 1
    for n in range(1, 400):  # the WAL may still have room for a few records
        response = _sign(api, n)
        if response.status_code != 201:
            break
        released += 1
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "storage_full" and "disk" in body["message"] and "signature" not in body
    assert _signatures(box.state_dir / "box.db") == released  # every released signature is recorded
    assert Api(box.url, "esb_nobody_nothing").post("/v1/signatures", json={}).status_code == 401  # not a 500
    filler.unlink()
    assert _sign(api, 1000).status_code == 201
    assert _signatures(box.state_dir / "box.db") == released + 1


def test_below_the_free_space_floor_bad_keys_are_only_counted(box_on_small_disk):
    box, _ = box_on_small_disk  # 3 MB is below the default floor of [audit] min_free_mb
    for _ in range(3):
        assert Api(box.url, "esb_nobody_nothing").post("/v1/signatures", json={}).status_code == 401
    conn = open_connection(box.state_dir / "box.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action LIKE 'refusal%'").fetchone()[0] == 0
        assert conn.execute("SELECT SUM(refusals) FROM refusal_counts").fetchone()[0] == 3
        assert refused_since(conn, "2000-01-01") == 3
    finally:
        conn.close()


def test_dashboard_warns_when_free_space_runs_low(small_disk):
    database = small_disk / "box.db"
    Database(database).connect().close()
    budget = StorageBudget(max_db_bytes=64 * MB, min_free_bytes=1 * MB)
    assert storage_warnings(budget.state(database)) == []
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (2 * MB + 512 * 1024))
    state = budget.state(database)
    assert state.free_bytes < 1 * MB and state.low_on_space
    assert [level for level, _ in storage_warnings(state)] == ["error"]
    assert "free" in storage_warnings(state)[0][1]
    small = StorageBudget(max_db_bytes=state.db_bytes - 1, min_free_bytes=0)
    assert small.state(database).over_budget and "audit" in storage_warnings(small.state(database))[0][1]
