"""The token's own speed: `hsm.Token.sign_digest` in a loop, in 1 and in N processes at once.

Processes, not threads, because that is how the box scales (firmware/workers.py) and because a
process per core is what SoftHSM2 scales best with (the field notes). They are spawned, not
forked: the bench process has the PKCS#11 module loaded and initialised, and a forked child
cannot trust that state. Each process logs in, signs once untimed (the key handle is cached), then
waits at a barrier so that all of them sign during the same window.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import threading
import time
from typing import Any

from firmware.config import BoxConfig
from hsm import SignatureScheme, Token, TokenConfig

__all__ = ["raw_sign_rate"]

_SPAWN = multiprocessing.get_context("spawn")
_READY_TIMEOUT_S = 120.0


def _signer(config: TokenConfig, label: str, scheme: SignatureScheme, seconds: float, opening: Any, barrier: Any,
            results: Any) -> None:
    try:
        with opening:  # SoftHSM2 may not find the token while another process is opening it
            token = Token(dataclasses.replace(config, sessions=1))
        digest = os.urandom(32)
        token.sign_digest(label, digest, "sha256", scheme)
    except Exception as exc:
        barrier.abort()
        results.put(f"{type(exc).__name__}: {exc}")
        return
    try:
        barrier.wait(timeout=_READY_TIMEOUT_S)
        count, start, cpu0 = 0, time.monotonic(), time.process_time()
        deadline = start + seconds
        while time.monotonic() < deadline:
            token.sign_digest(label, digest, "sha256", scheme)
            count += 1
        results.put((count, time.monotonic() - start, time.process_time() - cpu0))
    except threading.BrokenBarrierError:
        return  # another process failed; the parent reports its error
    finally:
        token.close()


def raw_sign_rate(config: BoxConfig, scheme: SignatureScheme, processes: int, seconds: float) -> dict[str, float]:
    """Signs/s of the box's signing key with ``processes`` processes signing at once, and the CPU
    cores they used (it should be about ``processes``: less means the machine was crowded)."""
    opening, barrier, results = _SPAWN.Lock(), _SPAWN.Barrier(processes), _SPAWN.Queue()
    token_config = config.token_config()  # sets the module's environment variables, which the children inherit
    children = [
        _SPAWN.Process(target=_signer, args=(token_config, config.key_label, scheme, seconds, opening, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        first = results.get(timeout=_READY_TIMEOUT_S + seconds)
        if isinstance(first, str):
            raise RuntimeError(f"a raw token process failed: {first}")
        outcomes = [first, *(results.get(timeout=_READY_TIMEOUT_S + seconds) for _ in children[1:])]
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.terminate()
    window = max(elapsed for _, elapsed, _ in outcomes)
    return {"per_s": sum(count for count, _, _ in outcomes) / window,
            "cpu_cores": sum(cpu for _, _, cpu in outcomes) / window}
