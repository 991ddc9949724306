"""The box's latest clock reading against its TSA, shared by every worker process.

A reading is taken by whichever worker talks to the TSA (signing/clock.py). Kept only in that
process, a skewed clock would stop that worker while the others went on signing with a wrong
signing time until each happened to ask the TSA itself. One row in SQLite makes the verdict the
box's: a worker reads it before each signature (one read of one row) and writes it when a
reading changes the verdict, or to refresh it now and then (signing/clock.py decides).
"""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database, immediate

__all__ = ["ClockReading", "ClockReadings"]


@dataclass(frozen=True)
class ClockReading:
    skew_s: float  # box clock minus TSA genTime
    uncertainty_s: float
    at: float  # box time of the reading
    source: str


class ClockReadings:
    def __init__(self, db: Database) -> None:
        self._db = db

    def latest(self) -> ClockReading | None:
        row = self._db.connect().execute(
            "SELECT skew_s, uncertainty_s, at, source FROM clock_reading WHERE id = 1").fetchone()
        return None if row is None else ClockReading(*row)

    def record(self, reading: ClockReading) -> None:
        """Store ``reading``, unless another worker has stored a newer one meanwhile."""
        with immediate(self._db.connect()) as conn:
            conn.execute(
                "INSERT INTO clock_reading (id, skew_s, uncertainty_s, at, source) VALUES (1, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET skew_s = excluded.skew_s, uncertainty_s = excluded.uncertainty_s,"
                " at = excluded.at, source = excluded.source WHERE excluded.at > clock_reading.at",
                (reading.skew_s, reading.uncertainty_s, reading.at, reading.source))
