"""The one writer of box.toml: the admin console, the command line and provisioning change it here.

Why one path: the console once wrote box.toml beside the provisioning generations, replacing the
link into them with a file, and a later `provision rollback` silently threw the console's change
away (issue 9). Now every change is

- merged into the box.toml in force and checked before anything is written: it must load
  (`BoxConfig.from_text`) and pass the caller's check (the console assembles the new signing
  service and makes a test signature with it);
- when box.toml is the link to the current generation (firmware/operations/generations.py), a new
  generation, committed together with its audit entry; its state.json says who changed what,
  so a rollback goes back to the configuration before the change and says what it discards;
- otherwise box.toml itself, replaced crash-safely (firmware.durable), then the audit entry.

Bundles stage whole generations of their own (provisioning/apply.py) on the same store, under
the same lock, with their box.toml made by `render` here. tomli-w writes the file, so comments of
a hand-written box.toml are not kept; the one header (`header`) says so, who wrote it, and where
the settings are described.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ..config import BoxConfig, parse, redacted_url
from ..durable import write_durable
from ..store import audit
from ..store.db import Database
from .generations import Generations

__all__ = ["SERVICE_SECTIONS", "ConfigChange", "differences", "header", "merged", "render", "service_changes", "update"]

_SHOWN_CHARS = 60  # a value longer than this is shortened in the descriptions of a change


@dataclass(frozen=True)
class ConfigChange:
    config: BoxConfig  # the configuration now in force
    changes: list[str]  # "signing.default_level B-T→B-B", for people (audit entry, rollback report)
    generation: int | None  # the new generation, when box.toml is generation-managed


def merged(raw: dict[str, Any], changes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``raw`` with ``changes`` applied per section; a value of None removes the setting."""
    result = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section, values in changes.items():
        target = result.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return result


# Where the box's outside services go in box.toml: a stick's `services` and the console's set-up
# both name them this way.
SERVICE_SECTIONS = {"tsa_urls": "signing", "ocsp_urls": "revocation", "crl_urls": "revocation"}


def service_changes(services: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """{"tsa_urls": [...], "ocsp_urls": [...]} as the change to box.toml's sections that hold them."""
    changes: dict[str, dict[str, Any]] = {}
    for name, urls in services.items():
        changes.setdefault(SERVICE_SECTIONS[name], {})[name] = list(urls)
    return changes


def _flat(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, str) and "://" in value:
        value = redacted_url(value)  # a proxy URL may carry a password: never into the audit log
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 1] + "…"


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each changed setting as 'section.key old→new', in the file's order."""
    before, after = _flat(old), _flat(new)
    keys = list(before) + [k for k in after if k not in before]
    return [f"{k} {_shown(before.get(k))}→{_shown(after.get(k))}" for k in keys if before.get(k) != after.get(k)]


def header(written_by: str) -> str:
    """The comment every box.toml the box writes starts with."""
    return (f"# E-signature Box configuration. Last written by {written_by}, which keeps no comments;\n"
            "# every setting is described in README.md (\"Configuration\"); `esignbox config get SECTION.KEY`\n"
            "# prints the value in force, defaults included. On a provisioned box the configuration\n"
            "# before this change is provisioning/previous/box.toml.\n\n")


def render(raw: dict[str, Any], written_by: str) -> str:
    """box.toml's text for the settings ``raw``: the header, then the settings."""
    return header(written_by) + tomli_w.dumps(raw)


def update(state_dir: Path, changes: dict[str, dict[str, Any]], *, actor: str, action: str,
           details: dict[str, Any], db: Database | None = None,
           check: Callable[[BoxConfig], None] | None = None) -> ConfigChange:
    """Apply ``changes`` to the box's configuration and audit it as ``actor``/``action``.

    ``check`` sees the new configuration before anything is written; what it raises leaves the
    configuration as it was. The audit entry gets ``details`` plus the list of changes (and the
    generation, if one was made).
    """
    generations = Generations(state_dir)
    if db is not None:
        generations.use_database(db)
    with generations.locked():
        generations.recover()  # a change a crash interrupted is finished or undone first
        # No box.toml yet: a box being set up (firmware/operations/setup.py) starts from the defaults.
        old = parse(generations.box_toml.read_text(), generations.box_toml) if generations.box_toml.exists() else {}
        new = merged(old, changes)
        said = differences(old, new)
        text = render(new, f"{actor} ({action})")
        proposed = BoxConfig.from_text(generations.state_dir, text)
        if check is not None:
            check(proposed)
        details = {**details, "changes": said}
        if generations.config_is_linked():
            number = generations.add(text, actor, action, details)
        else:
            number = None
            write_durable(generations.box_toml, text.encode())
            audit.record(generations.connect(), audit.AuditEntry(actor, action, None, details))
    return ConfigChange(BoxConfig.load(generations.state_dir), said, number)
