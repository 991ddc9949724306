"""Generations of the box's configuration: every change kept, one symlink switch makes it current.

On disk, under ``<state>/provisioning/`` (the name is historical: USB provisioning made the first
generations; the admin console and the command line add theirs through firmware/operations/configstore.py)::

    generations/000007/         a complete configuration: box.toml, trust-roots.pem, box-chain.pem,
                                state.json (who made it and what changed), and for a bundle bundle/
    current  -> generations/000007
    previous -> generations/000006   (what a rollback goes back to)
    pending.json                present only while a switch is in flight (the journal)

and ``<state>/box.toml -> provisioning/current/box.toml``, so `BoxConfig.load` sees whichever
generation is current. Paths inside such a box.toml may name ``provisioning/current/…``, so one
symlink switch changes the configuration and its files together.

The commit point of every generation is one SQLite transaction in box.db (table
``provisioning_state``, "the generation record"): it records the generation in force together
with the audit entry that says why (and, for a bundle, its counter and API-client changes). The
order is: stage the generation (fsync) → write pending.json → commit → switch symlinks → remove
pending.json. `recover()` finishes the journal after a crash: generation committed → switch
forward; not committed → delete it. A power cut at any point therefore leaves either the old
configuration or the new one in force.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import CONFIG_NAME, ConfigError
from ..durable import fsync_dir, replace_symlink, write_durable, write_new
from ..store import audit
from ..store.db import Database, immediate

log = logging.getLogger("esignbox.generations")

CONFIG_LINK_TARGET = "provisioning/current/box.toml"
STATE_FILE = "state.json"
HOOK_ENV = "ESIGNBOX_PROVISION_TEST_HOOK"
_NOT_CARRIED = {CONFIG_NAME, STATE_FILE}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS provisioning_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    counter       INTEGER NOT NULL,     -- the highest bundle counter applied: a replay guard
    generation    INTEGER NOT NULL,     -- the generation in force
    bundle_digest TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    applied_at    TEXT NOT NULL
);
"""


class PendingStepMissing(ConfigError):
    """An interrupted operation needs a step only its own module can repeat (see `recover`)."""


@dataclass(frozen=True)
class Record:
    counter: int
    generation: int
    bundle_digest: str
    key_id: str
    applied_at: str


@dataclass(frozen=True)
class RolledBack:
    generation: int  # current again
    discarded: int  # the generation that was current
    discards: str  # "generation 5 (admin:alice settings.change: signing.default_level B-T→B-B)"

    @property
    def summary(self) -> str:
        return f"rolls back {self.discards} to generation {self.generation}"


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


def fsync_tree(path: Path) -> None:
    for directory, _, _ in os.walk(path):
        fsync_dir(Path(directory))


class Generations:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "provisioning"
        self.generations = self.root / "generations"
        self.current_link = self.root / "current"
        self.previous_link = self.root / "previous"
        self.pending_path = self.root / "pending.json"
        self.box_toml = self.state_dir / CONFIG_NAME
        self._db: Database | None = None

    # -- locking and the generation record -----------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """One configuration change at a time: a stick, the watcher, the console, the command line."""
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
            self.use_database(Database(self.state_dir / "box.db"))
        assert self._db is not None
        return self._db

    def use_database(self, db: Database) -> None:
        """Share the caller's connection to box.db (the console's) rather than opening another."""
        self._db = db
        db.connect().executescript(_SCHEMA)

    def forget_database(self) -> None:
        """box.db was replaced (a factory reset): the next use opens the new one."""
        self._db = None

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

    def _commit(self, conn: sqlite3.Connection, generation: int, entries: list[audit.AuditEntry]) -> None:
        """Inside the caller's transaction: ``generation`` is in force, for the reasons in ``entries``."""
        last = self.record(conn) or Record(0, generation, "", "", now_text())
        self.store_record(conn, replace(last, generation=generation, applied_at=now_text()))
        audit.append(conn, entries)

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
        known = [*self.numbered_generations(), self.current_generation() or 0, record.generation if record else 0]
        return max(known) + 1

    def config_is_linked(self) -> bool:
        """True when box.toml is the link to the current generation (generations are kept)."""
        try:
            return os.readlink(self.box_toml) == CONFIG_LINK_TARGET
        except OSError:
            return False

    @contextmanager
    def staging(self, number: int) -> Iterator[Path]:
        """A directory to fill; it becomes generation ``number`` (fsynced) when the block succeeds.

        A stage left by a crash is a ``.staging-*`` directory that `recover` deletes.
        """
        staging = self.generations / f".staging-{number:06d}"
        staging.mkdir(mode=0o700, parents=True)
        try:
            yield staging
            fsync_tree(staging)
            os.rename(staging, self.generation_dir(number))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self.generations)

    @staticmethod
    def carry_forward(source: Path | None, target: Path, replaced: set[str]) -> None:
        """Copy the files of generation ``source`` (not its box.toml, state.json or bundle/)."""
        if source is None or not source.is_dir():
            return
        for path in source.iterdir():
            if path.is_file() and not path.is_symlink() and path.name not in _NOT_CARRIED | replaced:
                write_new(target / path.name, path.read_bytes(), mode=path.stat().st_mode & 0o777)

    def describe(self, number: int) -> str:
        """What made generation ``number``, in a few words for a rollback's report and audit entry."""
        try:
            status = json.loads((self.generation_dir(number) / STATE_FILE).read_text())
        except (OSError, ValueError):
            return f"generation {number} (origin unknown)"
        if status.get("adopted"):
            what = "the configuration in force before it was provisioned or edited"
        elif "counter" in status:
            what = f"bundle counter {status['counter']}: " + ", ".join(status.get("sections") or ["no sections"])
        else:
            what = f"{status.get('actor', '?')} {status.get('action', '?')}: " + (
                "; ".join(status.get("changes") or []) or "no setting changed")
        return f"generation {number} ({what})"

    # -- a change made outside a bundle -----------------------------------------------------------
    def add(self, text: str, actor: str, action: str, details: dict[str, Any]) -> int:
        """Make ``text`` (a whole box.toml) the current configuration as a new generation.

        The other files of the current generation are carried forward; who made it and
        ``details["changes"]`` go to its state.json, so that a later rollback can say what it
        discards. The caller (firmware/operations/configstore.py) holds `locked()`; the audit entry is
        committed with the generation.
        """
        current = self.current_generation()
        assert current is not None and self.config_is_linked()
        number = self.next_generation()
        status = {"generation": number, "adopted": False, "made_at": now_text(), "actor": actor, "action": action,
                  "changes": details.get("changes", [])}
        with self.staging(number) as staging:
            write_new(staging / CONFIG_NAME, text.encode())
            self.carry_forward(self.generation_dir(current), staging, set())
            write_new(staging / STATE_FILE, json.dumps(status, indent=2, ensure_ascii=False).encode())
        self.write_pending(number, current, [number])
        test_hook("staged", self.root)
        conn = self.connect()
        try:
            with immediate(conn):
                self._commit(conn, number, [audit.AuditEntry(actor, action, None, {**details, "generation": number})])
        except BaseException:
            shutil.rmtree(self.generation_dir(number), ignore_errors=True)
            self.pending_path.unlink(missing_ok=True)
            raise
        self.switch(number, current)
        self.finish()
        return number

    def rollback(self, actor: str) -> RolledBack:
        """Make the previous generation current again; the audit entry says what is discarded."""
        current, previous = self.current_generation(), self.previous_generation()
        if current is None or previous is None or not self.generation_dir(previous).is_dir():
            raise ConfigError("there is no previous generation to roll back to")
        result = RolledBack(previous, current, self.describe(current))
        self.write_pending(previous, current, [])
        conn = self.connect()
        with immediate(conn):
            last = self.record(conn)
            self._commit(conn, previous, [audit.AuditEntry(actor, "provision.rollback", None, {
                "from": current, "to": previous, "counter": last.counter if last else 0,
                "discards": result.discards})])
        self.switch(previous, current)
        self.finish()
        log.warning("configuration %s", result.summary)
        return result

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

    def recover(self, post_commit: Callable[[Generations, int], object] | None = None) -> str | None:
        """Finish or undo an operation a crash interrupted; returns what was done, if anything.

        ``post_commit(generations, generation)`` repeats the steps that follow a bundle's commit
        (provisioning/apply.py); without it such a journal is left alone and PendingStepMissing
        raised, so that `esignbox provision recover` finishes it.
        """
        done = None
        if self.pending_path.exists():
            pending = json.loads(self.pending_path.read_text())
            record = self.record()
            generation = pending["generation"]
            if record is not None and record.generation == generation:
                if pending.get("post_commit") and post_commit is None:
                    raise PendingStepMissing("an interrupted provisioning is not finished: run "
                                             "`esignbox provision recover` first")
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
            log.warning("configuration recovery: %s", done)
        return done

    def prune(self) -> None:
        """Keep the current and previous generations; older ones go."""
        keep = {self.current_generation(), self.previous_generation()}
        for number in self.numbered_generations():
            if number not in keep:
                shutil.rmtree(self.generation_dir(number), ignore_errors=True)
