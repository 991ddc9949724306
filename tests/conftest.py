"""Shared fixtures: a real dev box (SoftHSM2 token, certomancer PKI servers, waitress API process).

Everything runs for real on 127.0.0.1: the tests talk HTTP to an `esignbox serve` subprocess,
which signs on a SoftHSM2 token and fetches timestamps/OCSP/CRLs from `certomancer animate`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from firmware.config import BoxConfig
from firmware.devbox import init_dev
from firmware.devpki import DevPki, PkiServer
from firmware.store.clients import ClientRegistry
from firmware.store.db import Database

from .support import Api, BoxProcess, free_port


@pytest.fixture(scope="session")
def box_config(tmp_path_factory) -> BoxConfig:
    state_dir = tmp_path_factory.mktemp("box")
    config = init_dev(state_dir, pki_port=free_port(), api_port=free_port())
    return config


@pytest.fixture(scope="session")
def dev_pki(box_config: BoxConfig) -> DevPki:
    return DevPki(box_config.state_dir / "pki", f"http://127.0.0.1:{box_config.pki_port}")


@pytest.fixture(scope="session")
def pki_server(dev_pki: DevPki, box_config: BoxConfig) -> Iterator[PkiServer]:
    server = PkiServer(dev_pki, box_config.pki_port)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pki_outage(pki_server: PkiServer) -> Iterator[None]:
    """The TSA, OCSP responder and CRL servers are down for the test, and back up after it."""
    pki_server.stop()
    try:
        yield
    finally:
        pki_server.start()


@pytest.fixture(scope="session")
def box(box_config: BoxConfig, pki_server: PkiServer) -> Iterator[BoxProcess]:
    process = BoxProcess(box_config.state_dir).start()
    yield process
    process.stop()


@pytest.fixture
def session_box_stopped(box: BoxProcess) -> Iterator[None]:
    """For a test that starts its own `esignbox serve` on the session's state directory (a fresh
    process, other settings): one box serves a state directory at a time (firmware/instance.py),
    so the session's box is stopped meanwhile and started again after the test."""
    box.stop()
    try:
        yield
    finally:
        box.start()


@pytest.fixture(scope="session")
def clients(box_config: BoxConfig) -> ClientRegistry:
    return ClientRegistry(Database(box_config.database))


@pytest.fixture(scope="session")
def api_key(clients: ClientRegistry) -> str:
    _, key = clients.add(f"tests-{os.getpid()}")
    return key


@pytest.fixture
def api(box: BoxProcess, api_key: str) -> Api:
    return Api(box.url, api_key)
