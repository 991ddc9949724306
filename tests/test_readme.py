"""README.md is the first thing a new user reads: every shell block in it runs as written, in order.

The test starts the box exactly as `make run` does (`.venv/bin/esignbox --state-dir var serve
--dev`, on the README's fixed ports 8080, 9180 and 8443) in a scratch directory laid out like a
fresh checkout: `.venv` links to this virtualenv, `examples/` is copied, `var/` is new. Then every
```sh/```bash block runs in one bash session (variables such as BOX and KEY carry over) with
`set -Eeuo pipefail` and a PATH without `.venv/bin` — only the README's own instructions put the
box's commands there. A block the test cannot run (root, disk images, `make run` itself) says why
in an HTML comment on the line before its fence; such blocks are few and listed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV = Path(sys.executable).parent.parent  # not resolved: the venv's bin/python may be a symlink
README_PORTS = {8080: "API", 9180: "dev PKI", 8443: "admin console", 1025: "dev mailbox", 2525: "inbound mail",
                1389: "LDAP"}
RUN_LANGUAGES = {"sh", "bash"}
# What else a fence may be: config and response examples, and printed output.
SHOWN_LANGUAGES = {"toml", "json", "text"}
SKIP = re.compile(r"^\s*<!--\s*not run by tests/test_readme\.py:(?P<reason>.*?)-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>\S*)\s*$")
MAX_SKIPPED = 4  # `make run`/`make test`, image building, root with a real USB stick: the exceptions
ERROR_BODY = re.compile(r'"error"\s*:\s*"')  # the box's and CSC's error shape; "error": null is fine


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence in README.md
    language: str
    text: str
    skip_reason: str | None

    def where(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, in document order, with the skip reason of the comment before it."""
    lines = text.splitlines()
    blocks, number = [], 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        if not opening:
            number += 1
            continue
        end = next((i for i in range(number + 1, len(lines)) if lines[i].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"README.md:{number + 1}: fence never closed")
        indent = len(opening["indent"])
        body = "\n".join(line[indent:] for line in lines[number + 1:end])
        skip = SKIP.match(lines[number - 1]) if number else None
        blocks.append(Block(number + 1, opening["language"], body + "\n", skip["reason"].strip() if skip else None))
        number = end + 1
    return blocks


def dangling_skip_markers(text: str) -> list[int]:
    """Lines with a skip comment that is not directly followed by a shell block."""
    lines = text.splitlines()
    return [i + 1 for i, line in enumerate(lines)
            if SKIP.match(line) and not (i + 1 < len(lines) and (m := FENCE.match(lines[i + 1]))
                                         and m["language"] in RUN_LANGUAGES)]


def test_readme_fences_are_runnable_or_marked():
    """A block escapes the run only by saying why; no fence hides shell under another language."""
    text = README.read_text()
    blocks = readme_blocks(text)
    unknown = [f"{b.where()} ```{b.language}" for b in blocks if b.language not in RUN_LANGUAGES | SHOWN_LANGUAGES]
    assert not unknown, f"fences must be sh/bash (run) or {sorted(SHOWN_LANGUAGES)} (shown): {unknown}"
    assert not dangling_skip_markers(text), "skip comments must sit right before a ```sh block"
    skipped = [b for b in blocks if b.skip_reason is not None]
    assert all(b.skip_reason for b in skipped), [b.where() for b in skipped if not b.skip_reason]
    listing = "\n".join(f"  {b.where()}: {b.skip_reason}" for b in skipped)
    print(f"{len(skipped)} README block(s) not run:\n{listing}")
    assert len(skipped) <= MAX_SKIPPED, f"skipping must stay the exception:\n{listing}"


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _new_users_environment() -> dict[str, str]:
    """This process's environment without the virtualenv on PATH: the README must put it there."""
    venv_bin = (VENV / "bin").resolve()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "ESIGNBOX_STATE_DIR")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != venv_bin)
    return env


def _checkout(workdir: Path) -> None:
    """What a new user has after cloning and `make run`: the venv, the examples, no var/ yet."""
    (workdir / ".venv").symlink_to(VENV, target_is_directory=True)
    shutil.copytree(ROOT / "examples", workdir / "examples")


def _start_box(workdir: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """The recipe of `make run`, waited for until the API answers."""
    with log_path.open("wb") as log:
        process = subprocess.Popen([".venv/bin/esignbox", "--state-dir", "var", "serve", "--dev"],
                                   cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120  # first start: token, RSA key, dev PKI, console CA
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"`make run`'s command exited early:\n{log_path.read_text()}")
        try:
            if requests.get("http://127.0.0.1:8080/v1/health", timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.2)
    _stop(process)
    raise AssertionError(f"the box did not answer on 127.0.0.1:8080 within 120 s:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # as Ctrl-C would: the dev PKI and nginx stop with it
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _script(blocks: list[Block], block_dir: Path) -> str:
    """One bash session that sources each block in turn and, on a failure, names block and line."""
    lines = ["set -Eeuo pipefail",
             "trap 'echo \"@@ FAILED $README_BLOCK at block line $LINENO (exit $?)\" >&2' ERR"]
    for number, block in enumerate(blocks):
        path = block_dir / f"block-{number:02}.sh"
        path.write_text(block.text)
        lines += [f"README_BLOCK={block.where()}", f"echo \"@@ {block.where()} (at ${{SECONDS}} s)\"", f"source {path}"]
    lines.append("echo '@@ all README blocks ran'")
    return "\n".join(lines) + "\n"


def _failure_report(blocks: list[Block], output: str) -> str:
    failed = re.search(r"@@ FAILED README\.md:(\d+) at block line (\d+)", output)
    if not failed:
        return output[-6000:]
    block = next(b for b in blocks if b.line == int(failed[1]))
    readme_line = block.line + int(failed[2])
    since = output.rfind(f"@@ {block.where()} ")
    return (f"README.md line {readme_line} failed (block at line {block.line}):\n"
            f"  {block.text.splitlines()[int(failed[2]) - 1]}\n--- output of that block ---\n"
            f"{output[since:][-6000:]}")


def test_every_readme_block_runs_in_order_after_make_run(tmp_path: Path):
    taken = [f"{port} ({what})" for port, what in README_PORTS.items() if _port_taken(port)]
    if taken:
        pytest.fail(f"the README's fixed ports are in use on 127.0.0.1: {', '.join(taken)}; "
                    "stop whatever serves there (another `make run`?) and run again")
    blocks = [b for b in readme_blocks(README.read_text()) if b.language in RUN_LANGUAGES and b.skip_reason is None]
    workdir, block_dir = tmp_path / "checkout", tmp_path / "blocks"
    workdir.mkdir()
    block_dir.mkdir()
    _checkout(workdir)
    env = _new_users_environment()
    box = _start_box(workdir, env, tmp_path / "make-run.log")
    try:
        started = time.monotonic()
        run = subprocess.run(["bash", "-c", _script(blocks, block_dir)], cwd=workdir, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=300)
        elapsed = time.monotonic() - started
    finally:
        _stop(box)
    output = run.stdout.decode("utf-8", errors="replace")
    (tmp_path / "readme-output.txt").write_text(output)
    if run.returncode != 0:
        pytest.fail(f"{_failure_report(blocks, output)}\n(all output: {tmp_path / 'readme-output.txt'})", pytrace=False)
    assert "@@ all README blocks ran" in output
    # Output a person reads: no PDF or DER spilled onto the terminal, no error bodies passed over.
    assert not any(mark in output for mark in ("\x00", "\ufffd", "%PDF")), "a README block prints binary data"
    errors = [line for line in output.splitlines() if ERROR_BODY.search(line)]
    assert not errors, f"a README command got an error response: {errors}"
    print(f"{len(blocks)} README blocks ran in {elapsed:.1f} s")
