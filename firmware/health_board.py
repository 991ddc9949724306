"""What the serving parent's parts report, for the /v1/health the worker processes answer.

Parts beside the signing path register a report in the Box's ``health_parts`` (the console
registers its nginx front's). They run in the supervising parent, but /v1/health is answered by
the workers (firmware/workers.py), which cannot call into the parent. So the parent writes the
reports to one small file in the state directory whenever they change (checked every
``PUBLISH_INTERVAL_S``), and a worker's report for each part reads it back. The file is not
fsynced: it describes the running box only, and every start rewrites it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["PUBLISH_INTERVAL_S", "HealthBoard"]

BOARD_NAME = "health-parts.json"
PUBLISH_INTERVAL_S = 1.0

Report = Callable[[], dict[str, object]]


class HealthBoard:
    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / BOARD_NAME
        self._written: str | None = None

    def publish(self, parts: dict[str, Report]) -> None:
        """In the parent: write the parts' reports if they differ from what was written last."""
        text = json.dumps({name: report() for name, report in parts.items()}, sort_keys=True)
        if text == self._written:
            return
        tmp = self._path.with_name(f".{BOARD_NAME}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, self._path)  # a reader sees the old reports or the new ones, never half
        self._written = text

    def reports(self) -> dict[str, Report]:
        """In a worker: one report per part the parent published, each reading the latest."""
        return {name: self._reader(name) for name in self._read()}

    def _read(self) -> dict[str, Any]:
        try:
            board: dict[str, Any] = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return {}
        return board

    def _reader(self, name: str) -> Report:
        def report() -> dict[str, object]:
            latest: dict[str, object] = self._read().get(name, {"reported": False})
            return latest

        return report
