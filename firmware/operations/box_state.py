"""The box's state in one word, and the text its screen shows: `esignbox status --screen`.

The interface with the image (image/rootfs/usr/lib/esignbox/screen runs the command, as the
service user, and puts its output above the login prompt through /etc/issue.d: the screen of a box
without a shell; it may run as root too). The command exits 0 and prints, one fact a line,
``Name: value`` after a first title line; lines whose fact does not apply are left out:

    E-signature Box
    State: not set up                 one of STATES below
    Detail: …                         why, when there is more to say (the token's error)
    Console: https://192.168.1.20:8443/   one line per address the admin console answers on
    Console CA SHA-256: 4D:03:E0:…    the box-local CA the console's certificate chains to
    Provisioning key: 3f2a…  (enrolled from a stick at …)   or "none — …" (firmware/operations/trust.py)
    Set-up code: 9Q6H-G9AK-DYV8       the one-time code, while no administrator exists
    Clock: synchronised               synchronised / NOT synchronised / unknown

What it reads, all under the state directory: box.toml (set up or not, firmware/operations/
setup.py), ``console/setup-code`` (0600: the plain code the box made, removed once an
administrator exists; firmware/operations/accounts.py), ``provisioning/trusted.pub`` and
``trusted.json`` (the provisioning key, firmware/operations/trust.py), ``console/screen.json`` (the console's
addresses and CA fingerprint, written by the console when it starts: `publish_console`), and the
running signing API's /v1/health on loopback (the token); never box.db, which root must not
open (it would leave journal files the service cannot write). The clock is systemd-timesyncd's
``timedatectl show -p NTPSynchronized``; without timedatectl it is "unknown", which does not
make a box not ready.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..config import BoxConfig, ConfigError
from ..durable import write_durable
from . import trust
from .accounts import shown_setup_code
from .setup import current_config, is_set_up

__all__ = ["STATES", "BoxState", "box_state", "publish_console", "screen_text"]

NOT_SET_UP, READY, TOKEN_MISSING, CLOCK, NOT_ANSWERING = (
    "not set up", "ready", "token missing", "clock not synchronised", "signing service not answering")
STATES = (NOT_SET_UP, READY, TOKEN_MISSING, CLOCK, NOT_ANSWERING)
SCREEN_FACTS = Path("console") / "screen.json"
HEALTH_TIMEOUT_S = 3.0
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass(frozen=True)
class BoxState:
    state: str  # one of STATES
    detail: str = ""
    clock: str = "unknown"  # "synchronised", "NOT synchronised", "unknown"
    console_urls: list[str] = field(default_factory=list)
    console_ca: str = ""
    setup_code: str | None = None
    provisioning_key: str = ""


def publish_console(state_dir: Path, urls: list[str], ca_fingerprint: str) -> None:
    """For the screen: where the console answers and its CA, written by the console at its start."""
    path = state_dir / SCREEN_FACTS
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_durable(path, json.dumps({"urls": urls, "ca_fingerprint": ca_fingerprint}).encode())


def clock_synchronised() -> bool | None:
    """systemd-timesyncd's view; None when there is no timedatectl or it does not answer."""
    command = shutil.which("timedatectl")
    if command is None:
        return None
    try:
        done = subprocess.run([command, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True,
                              timeout=5, check=False)
    except subprocess.TimeoutExpired:
        return None
    answer = done.stdout.strip()
    return {"yes": True, "no": False}.get(answer) if done.returncode == 0 else None


def _health(config: BoxConfig) -> tuple[str, str]:
    """(state, detail) from the running signing API's /v1/health."""
    host = _LOOPBACK.get(config.api_host, config.api_host)
    url = f"http://[{host}]:{config.api_port}/v1/health" if ":" in host else f"http://{host}:{config.api_port}/v1/health"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as response:
            report = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: the box cannot sign; the body says why
        report = json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        return NOT_ANSWERING, f"{url}: {exc}"
    if not report.get("token_present", False):
        return TOKEN_MISSING, str((report.get("token") or {}).get("reason") or report.get("status", ""))
    return READY, ""


def box_state(state_dir: Path) -> BoxState:
    state_dir = Path(state_dir)
    synchronised = clock_synchronised()
    clock = {True: "synchronised", False: "NOT synchronised", None: "unknown"}[synchronised]
    try:
        facts = json.loads((state_dir / SCREEN_FACTS).read_text())
    except (OSError, ValueError):
        facts = {}
    code = shown_setup_code(state_dir)
    shown = BoxState(NOT_SET_UP, "open the admin console to set the box up", clock, list(facts.get("urls", [])),
                     str(facts.get("ca_fingerprint") or ""), code, trust.screen_line(state_dir, code is not None))
    if not is_set_up(state_dir):
        return shown
    try:
        config = current_config(state_dir)
    except ConfigError as exc:
        return dataclasses.replace(shown, state=NOT_ANSWERING, detail=str(exc))
    state, detail = _health(config)
    if state == READY and synchronised is False:
        state, detail = CLOCK, "signatures carry the box's time, and NTP has not synchronised it"
    return dataclasses.replace(shown, state=state, detail=detail)


def screen_text(state: BoxState) -> str:
    lines = ["E-signature Box", f"State: {state.state}"]
    if state.detail:
        lines.append(f"Detail: {state.detail}")
    lines += [f"Console: {url}" for url in state.console_urls]
    if state.console_ca:
        lines.append(f"Console CA SHA-256: {state.console_ca}")
    if state.provisioning_key:
        lines.append(f"Provisioning key: {state.provisioning_key}")
    if state.setup_code:
        lines.append(f"Set-up code: {state.setup_code}")
    lines.append(f"Clock: {state.clock}")
    return "\n".join(lines)
