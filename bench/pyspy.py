"""Where a worker's Python time goes per request: py-spy samples a worker under wrk's load.

py-spy (``pip install py-spy``, the project's ``bench`` extra) reads the worker's stacks from
outside, so the box runs unchanged and at full speed: waitress's HTTP parsing and the WSGI
plumbing are in the picture, not only the app. ``--gil`` keeps only the samples of the thread
that holds the GIL: the serial Python cost that caps what one worker can do. The token's
signing, SQLite and the socket calls release the GIL, so their wall time is not in it (their
Python callers' share is). Samples become milliseconds per request with the number of requests
the worker answered during the recording.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["find_pyspy", "record", "summarise"]

RATE_HZ = 500
# Frames every sample of a thread goes through: they say nothing about the request's cost.
_PLUMBING = re.compile(r"^(Thread\.|_run_module_as_main|_run_code|<module>|run \(firmware/cli|cmd_serve_worker)")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def find_pyspy() -> str | None:
    """py-spy next to this interpreter (installed in the venv) or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pyspy: str, pid: int, seconds: int, out: Path) -> None:
    """Sample ``pid`` for ``seconds`` without stopping it (--nonblocking: no pause per sample)."""
    subprocess.run([pyspy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(RATE_HZ), "--gil",
                    "--nonblocking", "--format", "raw", "--output", str(out)], capture_output=True, check=True)


def _name(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    where = re.sub(r"^.*/(site-packages|python3\.\d+)/", "", match["file"])  # a package's own path
    where = re.sub(r"^/.*?/(firmware|hsm|bench)/", r"\1/", where)  # the project's, wherever it is checked out
    return f"{match['function']} ({where})"


def summarise(stacks: Path, requests: float, top: int = 25) -> dict[str, Any]:
    """Milliseconds of GIL-held time per request: in all, and per function with what it calls
    (inclusive) and in its own code (self)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        names = [_name(frame) for frame in stack.split(";")]
        for name in set(names):
            if not _PLUMBING.match(name):
                inclusive[name] += samples
        own[names[-1]] += samples
    per_request = 1000.0 / RATE_HZ / requests

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "ms": samples * per_request, "share": samples / total}
                for name, samples in counter.most_common(top)]

    return {"samples": total, "requests": requests, "gil_ms_per_request": total * per_request,
            "inclusive": rows(inclusive), "self": rows(own)}
