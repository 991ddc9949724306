"""The operator's command line as a person meets it: help for everything, one-line errors, tidy output."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

from esignbox import parser
from firmware.config import BoxConfig

from .support import ESIGNBOX


def esignbox(*args: str, state_dir: Path | None = None) -> subprocess.CompletedProcess:
    prefix = ["--state-dir", str(state_dir)] if state_dir else []
    return subprocess.run([ESIGNBOX, *prefix, *args], capture_output=True, text=True, timeout=120)


def _commands(p: argparse.ArgumentParser, path: str = "esignbox"):
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"`{path} {name}` has no help text"
                yield from _commands(sub, f"{path} {name}")


def test_every_command_and_option_has_help():
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, p in _commands(parser())
        for action in p._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help
    ]
    assert not missing, "no help text for: " + ", ".join(missing)


@pytest.mark.parametrize("args, message", [
    (("clients", "disable", "nosuchclient"), "no client 'nosuchclient'"),
    (("import-chain", "/nonexistent/chain.pem"), "/nonexistent/chain.pem"),
    (("clients", "add", ""), "client name must be"),
])
def test_errors_are_one_line_without_exception_names(box_config: BoxConfig, args, message):
    result = esignbox(*args, state_dir=box_config.state_dir)
    assert result.returncode == 1
    assert result.stderr.startswith("esignbox: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for name in ("Error", "Exception", "InvalidRequest", "Traceback"):
        assert name not in result.stderr, result.stderr


def test_missing_state_dir_says_what_to_do(tmp_path: Path):
    result = esignbox("clients", "list", state_dir=tmp_path / "none")
    assert result.returncode == 1 and "box.toml not found" in result.stderr and "ConfigError" not in result.stderr


def test_commands_print_no_log_chatter(box_config: BoxConfig):
    for args in (("clients", "list"), ("usage",), ("audit", "verify")):
        result = esignbox(*args, state_dir=box_config.state_dir)
        assert result.returncode == 0, result.stderr
        assert " INFO " not in result.stderr and " INFO " not in result.stdout, result.stderr


def test_clients_list_and_usage_name_their_columns_and_clients(box_config: BoxConfig, api):
    assert api.post("/v1/signatures", json={"hash_algorithm": "sha256", "hash": "A" * 43 + "=",
                                            "level": "B-B"}).status_code == 201
    me = api.get("/v1/usage").json()["client"]
    listing = esignbox("clients", "list", state_dir=box_config.state_dir).stdout.splitlines()
    assert listing[0].split()[:3] == ["ID", "NAME", "SCOPES"]
    usage = esignbox("usage", "--client", me["id"], state_dir=box_config.state_dir).stdout.splitlines()
    assert usage[0].split() == ["DAY", "CLIENT", "NAME", "ENDPOINT", "SIGNATURES"]
    assert any(me["name"] in line and "hash" in line for line in usage[1:])
    rows = json.loads(esignbox("usage", "--client", me["id"], "--json", state_dir=box_config.state_dir).stdout)
    assert rows and {"day", "client_id", "client_name", "endpoint", "signatures"} <= set(rows[0])
    assert [(r["endpoint"], r["signatures"]) for r in rows] == [
        (u["endpoint"], u["signatures"]) for u in api.get("/v1/usage").json()["usage"]]


def test_provision_apply_with_a_missing_report_dir_changes_nothing(box_config: BoxConfig, tmp_path: Path):
    result = esignbox("provision", "apply", str(tmp_path / "bundle"), "--report-dir", str(tmp_path / "nowhere"),
                      state_dir=box_config.state_dir)
    assert result.returncode != 0 and "nowhere" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_second_serve_says_the_box_is_already_running(box_config: BoxConfig, box):
    second = esignbox("serve", "--port", "0", state_dir=box_config.state_dir)
    assert second.returncode == 1
    assert f"already running (pid {box.process.pid})" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr


def test_serve_on_a_taken_port_names_the_port(box_config: BoxConfig, tmp_path: Path):
    import socket

    from .test_provisioning import write_box_toml

    state_dir = tmp_path / "other"
    state_dir.mkdir()
    write_box_toml(state_dir, box_config)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = esignbox("serve", "--port", str(port), state_dir=state_dir)
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "in use" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
