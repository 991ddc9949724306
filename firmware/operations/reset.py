"""A factory reset: the box back to "not set up", its keys gone, and a record that outlives the wipe.

Reached only through a signed reset bundle (provisioning/: signed by the trusted provisioning
key, bound to this box's serial, replay-guarded by its counter), never from the network: a
person with the stick was at the box. What happens, in order:

1. ``resets.log`` in the state directory gets a "started" line (when, which key, which bundle).
   It is kept by the wipe, so the box's own history of resets survives every one of them; it is
   in the state directory (not beside it) because that is the only place the service may write.
2. The key objects the box made are destroyed on the token, by label, through hsm/: the labels
   its audit log says it generated (``key.generate``), those it made CSRs for
   (``provisioning/csr/``), those it holds chains for (``chains/``) and the signing key of
   box.toml. Other objects on the token are left alone. A token that does not answer stops the
   reset before anything is wiped: it must not leave keys behind silently.
3. Everything in the state directory is removed except `KEPT`: box-id (the serial sticks are
   bound to), the trusted provisioning key (so the same administrator can provision the box
   again; a stranger's key would need the box's screen, as on the first day) and resets.log.
   A SoftHSM2 token the box made in its state directory (``tokens/``) goes with it.
4. A new box.db whose first audit entry is ``box.reset`` (when, by which key, which bundle, which
   keys were destroyed), committed together with the reset's counter as the last counter applied,
   so neither the reset stick nor any older bundle can be replayed on the fresh box.
5. resets.log gets a "done" line.

A running `esignbox serve` is restarted by whoever applied the stick (the image's
esignbox-provision@ unit, as after any bundle); until then it works on unlinked files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hsm import KeyNotFound, Token

from ..config import BoxConfig
from ..durable import fsync_dir
from ..store import audit
from ..store.db import Database, immediate
from .generations import Generations, Record, now_text
from .keys import LABEL

__all__ = ["KEPT", "RESET_LOG", "ResetRequest", "box_key_labels", "factory_reset"]

RESET_LOG = "resets.log"
KEPT = ("box-id", "provisioning/trusted.pub", "provisioning/trusted.json", RESET_LOG)


@dataclass(frozen=True)
class ResetRequest:
    """Who asked (the verified reset bundle): recorded before, and after, the wipe."""

    key_id: str
    bundle_digest: str
    counter: int
    source: str


def box_key_labels(state_dir: Path, db: Database, config: BoxConfig | None) -> list[str]:
    """The labels of the keys this box made or uses, from its own records."""
    labels = {entry["details"].get("label") for entry in audit.export(db.connect()) if entry["action"] == "key.generate"}
    labels |= {path.stem for path in (state_dir / "provisioning" / "csr").glob("*.csr")}
    labels |= {path.stem for path in (state_dir / "chains").glob("*.pem")}
    if config is not None and config.token is not None:
        labels.add(config.key_label)
    return sorted(label for label in labels if isinstance(label, str) and LABEL.match(label))


def _log(state_dir: Path, line: dict[str, object]) -> None:
    path = state_dir / RESET_LOG
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(line, sort_keys=True) + "\n")
        log.flush()
        os.fsync(log.fileno())
    fsync_dir(state_dir)


def _wipe(state_dir: Path) -> list[str]:
    kept = {Path(name) for name in KEPT}
    removed = []
    for path in sorted(state_dir.rglob("*"), reverse=True):  # children before their directories
        relative = path.relative_to(state_dir)
        if relative in kept or any(relative in k.parents for k in kept):
            continue
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        elif not any(path.iterdir()):
            path.rmdir()
        else:
            shutil.rmtree(path)
        if len(relative.parts) == 1:
            removed.append(str(relative))
    fsync_dir(state_dir)
    return sorted(removed)


def factory_reset(state_dir: Path, db: Database, config: BoxConfig | None, token: Token | None,
                  request: ResetRequest) -> list[str]:
    """Wipe the box as the module docstring says; returns what was done, for the stick's report."""
    state_dir = Path(state_dir)
    labels = box_key_labels(state_dir, db, config)
    started = now_text()
    _log(state_dir, {"event": "started", "at": started, "key_id": request.key_id, "bundle": request.bundle_digest,
                     "counter": request.counter, "labels": labels})
    destroyed = []
    if token is not None:
        for label in labels:
            try:
                token.destroy_key(label)
            except KeyNotFound:
                continue
            destroyed.append(label)
        token.close()
    db.close()
    removed = _wipe(state_dir)
    fresh = Database(state_dir / "box.db")
    generations = Generations(state_dir)
    generations.use_database(fresh)
    with immediate(fresh.connect()) as conn:
        audit.append(conn, [audit.AuditEntry("provisioning", "box.reset", None, {
            "at": started, "key_id": request.key_id, "bundle": request.bundle_digest, "counter": request.counter,
            "source": request.source, "keys_destroyed": destroyed, "removed": removed, "log": RESET_LOG})])
        generations.store_record(conn, Record(request.counter, 0, request.bundle_digest, request.key_id, now_text()))
    _log(state_dir, {"event": "done", "at": now_text(), "bundle": request.bundle_digest, "keys_destroyed": destroyed,
                     "removed": removed})
    return [f"token keys destroyed: {', '.join(destroyed) or 'none'}",
            f"removed from the state directory: {', '.join(removed) or 'nothing'}",
            f"kept: {', '.join(KEPT)}",
            "the box is not set up: the console's set-up starts over with a new one-time code once the service restarts"]
