"""The box's provisioning state: generations of configuration, the commit record, recovery.

On disk, under ``<state>/provisioning/``::

    trusted.pub                 the one provisioning public key this box accepts
    generations/000007/         a complete configuration: box.toml, trust-roots.pem, box-chain.pem,
                                admin.json, state.json and bundle/ (the verified bundle's bytes)
    current  -> generations/000007
    previous -> generations/000006   (kept for `esignbox provision rollback`)
    pending.json                present only while a switch is in flight (the journal)
    csr/<label>.csr             CSRs made for key requests
    reports/                    copies of the reports written to sticks

and ``<state>/box.toml -> provisioning/current/box.toml``, so `BoxConfig.load` sees whichever
generation is current. Paths inside a provisioned box.toml name ``provisioning/current/…``, so
one symlink switch changes the configuration and its files together.

The commit point is one SQLite transaction in box.db (table ``provisioning_state``): it records
the counter and the generation together with the API-client changes and the audit entry. The
order is: stage the generation (fsync) → write pending.json → commit → switch symlinks → remove
pending.json. `recover()` (run before every apply, by `provision recover` and by the watcher at
start) finishes the journal: generation committed → switch forward; not committed → delete it.
A power cut at any point therefore leaves either the old configuration or the new one in force.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from firmware.store.db import Database

from firmware.durable import fsync_dir, write_durable

from .fsutil import replace_symlink

log = logging.getLogger("esignbox.provisioning")

CONFIG_LINK_TARGET = "provisioning/current/box.toml"
HOOK_ENV = "ESIGNBOX_PROVISION_TEST_HOOK"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS provisioning_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    counter       INTEGER NOT NULL,     -- the highest counter applied: a replay guard
    generation    INTEGER NOT NULL,     -- the generation in force
    bundle_digest TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    applied_at    TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Record:
    counter: int
    generation: int
    bundle_digest: str
    key_id: str
    applied_at: str


def test_hook(point: str, marker_dir: Path) -> None:
    """For the power-cut tests only: ESIGNBOX_PROVISION_TEST_HOOK=pause:<point> or crash:<point>.

    "pause" writes a marker file and sleeps so that the test can SIGKILL the process at exactly
    this point; "crash" exits at once without cleaning up. Nothing is run from the environment.
    """
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return
    action, _, where = spec.partition(":")
    if where != point:
        return
    if action == "crash":
        os._exit(99)
    if action == "pause":
        (marker_dir / "test-hook-paused").write_text(point)
        while True:
            time.sleep(1)


class ProvisioningState:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "provisioning"
        self.generations = self.root / "generations"
        self.current_link = self.root / "current"
        self.previous_link = self.root / "previous"
        self.pending_path = self.root / "pending.json"
        self.csr_dir = self.root / "csr"
        self.reports_dir = self.root / "reports"
        self.box_toml = self.state_dir / "box.toml"
        self._db: Database | None = None

    # -- locking and the database -------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """One provisioning operation at a time (the watcher and a hand-run apply)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @property
    def database(self) -> Database:
        if self._db is None:
            self._db = Database(self.state_dir / "box.db")
            self._db.connect().executescript(_SCHEMA)
        return self._db

    def connect(self) -> sqlite3.Connection:
        return self.database.connect()

    def record(self, conn: sqlite3.Connection | None = None) -> Record | None:
        conn = conn or self.connect()
        row = conn.execute("SELECT * FROM provisioning_state WHERE id = 1").fetchone()
        if row is None:
            return None
        return Record(row["counter"], row["generation"], row["bundle_digest"], row["key_id"], row["applied_at"])

    @staticmethod
    def store_record(conn: sqlite3.Connection, record: Record) -> None:
        conn.execute(
            "INSERT INTO provisioning_state(id, counter, generation, bundle_digest, key_id, applied_at)"
            " VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET counter = excluded.counter,"
            " generation = excluded.generation, bundle_digest = excluded.bundle_digest,"
            " key_id = excluded.key_id, applied_at = excluded.applied_at",
            (record.counter, record.generation, record.bundle_digest, record.key_id, record.applied_at),
        )

    # -- generations --------------------------------------------------------------------------
    def generation_dir(self, number: int) -> Path:
        return self.generations / f"{number:06d}"

    @staticmethod
    def _link_target(number: int) -> str:
        return f"generations/{number:06d}"

    def _generation_of(self, link: Path) -> int | None:
        try:
            target = os.readlink(link)
        except (FileNotFoundError, OSError):
            return None
        name = Path(target).name
        return int(name) if name.isdigit() else None

    def current_generation(self) -> int | None:
        return self._generation_of(self.current_link)

    def previous_generation(self) -> int | None:
        return self._generation_of(self.previous_link)

    def numbered_generations(self) -> list[int]:
        if not self.generations.exists():
            return []
        return sorted(int(p.name) for p in self.generations.iterdir() if p.name.isdigit())

    def next_generation(self) -> int:
        record = self.record()
        known = self.numbered_generations() + [self.current_generation() or 0, record.generation if record else 0]
        return max(known) + 1

    def config_is_linked(self) -> bool:
        try:
            return os.readlink(self.box_toml) == CONFIG_LINK_TARGET
        except OSError:
            return False

    # -- the journal ----------------------------------------------------------------------------
    def write_pending(self, generation: int, previous: int | None, created: list[int],
                      post_commit: bool = False) -> None:
        data = {"generation": generation, "previous": previous, "created": created, "post_commit": post_commit}
        write_durable(self.pending_path, json.dumps(data).encode(), mode=0o600)

    def switch(self, generation: int, previous: int | None) -> None:
        """Make ``generation`` current (idempotent). The caller has committed it in the database."""
        if previous is not None and previous != generation:
            replace_symlink(self.previous_link, self._link_target(previous))
        replace_symlink(self.current_link, self._link_target(generation))
        test_hook("switched-current", self.root)
        if not self.config_is_linked():
            replace_symlink(self.box_toml, CONFIG_LINK_TARGET)

    def finish(self) -> None:
        self.pending_path.unlink(missing_ok=True)
        fsync_dir(self.root)
        self.prune()

    def recover(self, post_commit: Callable[["ProvisioningState", int], object] | None = None) -> str | None:
        """Finish or undo an operation a crash interrupted; returns what was done, if anything.

        ``post_commit(state, generation)`` repeats the steps that follow a commit (see apply.py).
        """
        done = None
        if self.pending_path.exists():
            pending = json.loads(self.pending_path.read_text())
            record = self.record()
            generation = pending["generation"]
            if record is not None and record.generation == generation:
                self.switch(generation, pending.get("previous"))
                if pending.get("post_commit") and post_commit is not None:
                    post_commit(self, generation)
                done = f"finished switching to generation {generation}"
            else:
                for number in pending.get("created", []):
                    shutil.rmtree(self.generation_dir(number), ignore_errors=True)
                done = f"discarded uncommitted generation {generation}"
            self.pending_path.unlink()
            fsync_dir(self.root)
        if self.generations.exists():
            for leftover in self.generations.glob(".staging-*"):
                shutil.rmtree(leftover, ignore_errors=True)
                done = done or f"removed the half-written {leftover.name}"
        if done:
            log.warning("provisioning recovery: %s", done)
        return done

    def prune(self) -> None:
        """Keep the current and previous generations; older ones go."""
        keep = {self.current_generation(), self.previous_generation()}
        for number in self.numbered_generations():
            if number not in keep:
                shutil.rmtree(self.generation_dir(number), ignore_errors=True)


def box_id_path(state_dir: Path) -> Path:
    return Path(state_dir) / "box-id"

