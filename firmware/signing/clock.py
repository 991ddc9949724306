"""Is the box's clock right? Measured against the TSA, the one time source the box already trusts.

A Raspberry Pi has no real-time clock: until NTP has set it, it may believe it is some time last
year. Signing then would put a wrong signing time into CAdES signatures and PDF signature
dictionaries. Every timestamp the box obtains carries the TSA's genTime; the difference to the
box's own clock (at the middle of the round trip, less half the round trip as uncertainty) is the
skew. Above the configured limit the box refuses to sign — 503 `clock_skewed` — until a later
reading, from a signature's timestamp or from `probe()`, is back within the limit.

Whether the kernel considers the clock synchronised (NTP, adjtimex) is reported too, but only a
measured skew stops signing: an unsynchronised clock can still be right, and a box without a TSA
has nothing to compare with.

The verdict is the box's, not one worker process's: readings go through the database
(store/clock_readings.py) when one is given, so a skew one worker measured stops every worker's
next signature.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import time
from collections.abc import Callable
from datetime import datetime

from ..store.clock_readings import ClockReading, ClockReadings

__all__ = ["ClockSkewed", "ClockWatch", "kernel_synchronised"]

_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


class ClockSkewed(RuntimeError):
    """The box's clock disagrees with its TSA by more than allowed; nothing is signed."""


REFRESH_S = 30.0  # a reading that changes no verdict replaces the shared one at most this often


@functools.cache
def _adjtimex() -> Callable[[ctypes.Array[ctypes.c_char]], int] | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def kernel_synchronised() -> bool | None:
    """What adjtimex(2) says of the system clock; None where it cannot be asked."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    state = adjtimex(ctypes.create_string_buffer(512))  # struct timex, modes = 0: read only
    return None if state < 0 else state != _TIME_ERROR


class ClockWatch:
    def __init__(self, max_skew_s: float, reprobe_after_s: float = 30.0, shared: ClockReadings | None = None) -> None:
        self.max_skew_s = max_skew_s
        self._reprobe_after_s = reprobe_after_s
        self._lock = threading.Lock()
        self._reading: ClockReading | None = None
        self._shared = shared
        self.probe: Callable[[], None] | None = None  # asks the TSA for a timestamp (set by the assembler)

    def observe(self, gen_time: datetime, sent: float, received: float, source: str) -> None:
        """Record one TSA answer; raises ClockSkewed if it shows the box's clock is off."""
        reading = ClockReading((sent + received) / 2 - gen_time.timestamp(), (received - sent) / 2, received, source)
        with self._lock:
            self._reading = reading
        if self._shared is not None:
            stored = self._shared.latest()
            if stored is None or self._skewed(stored) != self._skewed(reading) or reading.at - stored.at >= REFRESH_S:
                self._shared.record(reading)
        self._raise_if_skewed(reading)

    def _latest(self) -> ClockReading | None:
        """The newest reading of this process and, when shared, of the others."""
        reading = self._reading
        stored = self._shared.latest() if self._shared is not None else None
        if stored is not None and (reading is None or stored.at > reading.at):
            return stored
        return reading

    def check(self) -> None:
        """Before signing: refuse while the last reading says the clock is off.

        A refused box would never get a new reading from signing, so a stale bad reading is
        re-measured first (at most every ``reprobe_after_s``): a clock fixed by NTP signs again.
        """
        reading = self._latest()
        if reading is None or not self._skewed(reading):
            return
        if self.probe is not None and time.time() - reading.at > self._reprobe_after_s:
            try:
                self.probe()
                return
            except ClockSkewed:
                raise
            except Exception:  # no TSA answered: keep the last reading's verdict
                pass
        self._raise_if_skewed(reading)

    def status(self) -> dict[str, object]:
        reading = self._latest()
        return {
            "synchronised": kernel_synchronised(),
            "skew_seconds": None if reading is None else round(reading.skew_s, 3),
            "measured_at": None if reading is None else datetime.fromtimestamp(reading.at).astimezone().isoformat(
                timespec="seconds"),
            "max_skew_seconds": self.max_skew_s,
            "ok": reading is None or not self._skewed(reading),
        }

    def _skewed(self, reading: ClockReading) -> bool:
        return abs(reading.skew_s) - reading.uncertainty_s > self.max_skew_s

    def _raise_if_skewed(self, reading: ClockReading) -> None:
        if self._skewed(reading):
            direction = "ahead of" if reading.skew_s > 0 else "behind"
            raise ClockSkewed(
                f"the box's clock is {abs(reading.skew_s):.0f} s {direction} the TSA {reading.source}"
                f" (at most {self.max_skew_s:.0f} s allowed): nothing is signed until the clock is set,"
                " e.g. by NTP"
            )
