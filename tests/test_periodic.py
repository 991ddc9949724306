"""The periodic job runner: a failing round does not end the job; stop ends it."""

from __future__ import annotations

import threading
import time

from firmware.periodic import Periodic


def test_a_job_runs_again_after_it_raised_and_stops_when_told():
    rounds: list[float] = []
    third = threading.Event()

    def job() -> None:
        rounds.append(time.monotonic())
        if len(rounds) >= 3:
            third.set()
        if len(rounds) == 1:
            raise RuntimeError("the TSA is down")

    runner = Periodic("test job", 0.05, job)
    runner.start()
    assert third.wait(5), rounds
    runner.stop()
    time.sleep(0.2)
    stopped_at = len(rounds)
    time.sleep(0.2)
    assert len(rounds) == stopped_at >= 3
