"""Jobs the serving box runs every so often (audit anchoring, the directory's nightly re-check).

One small runner instead of a thread class per job: a daemon thread that waits ``interval_s``,
runs the job, logs what it raised and goes on — an outage of what a job depends on (a TSA, an
OCSP responder) must not stop the box, and the next round tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Periodic"]

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, interval_s: float, job: Callable[[], None], run_first: bool = False) -> None:
        """``run_first``: run the job at once, then every ``interval_s`` (work a restart may have left)."""
        self._name = name
        self._run_first = run_first
        self._job = job
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        if self._run_first:
            self._round()
        while not self._stop.wait(self._interval_s):
            self._round()

    def _round(self) -> None:
        try:
            self._job()
        except Exception as exc:  # try again next round
            log.warning("%s failed: %s", self._name, exc)
