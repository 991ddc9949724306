"""The OpenAPI document describes what the server really does: schemathesis generates requests
for every operation against the live box and finds no 5xx and no response outside the schema."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .support import Api

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


def test_openapi_lists_every_route(box):
    spec = Api(box.url, None).get("/openapi.json").json()
    paths = set(spec["paths"])
    for path in ("/v1/signatures", "/v1/signatures/batch", "/v1/pdf/sign", "/v1/pdf/verify", "/v1/usage",
                 "/v1/health", "/v1/certificate", "/csc/v1/signatures/signHash", "/csc/v2/signatures/signDoc"):
        assert path in paths
    assert "/csc/v1/signatures/signDoc" not in paths  # v2 only


def test_schemathesis_finds_no_server_error_and_no_schema_violation(box, clients):
    _, key = clients.add("schemathesis", scopes=("hash", "pdf", "contracts"))
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "ESIGNBOX_TEST_API_KEY": key,
           "ESIGNBOX_TEST_URL": box.url, "PYTHONPATH": str(Path(__file__).parent.parent)}
    result = subprocess.run(
        [SCHEMATHESIS, "run", f"{box.url}/openapi.json",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance",
         "--phases", "examples,coverage,fuzzing", "--max-examples", "15", "--workers", "2",
         "--seed", "1", "--no-color", "--request-timeout", "60"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    output = result.stdout + result.stderr
    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "schemathesis.txt").write_text(output)  # the whole run, for whoever reads a failure
    assert result.returncode == 0, output[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated and int(generated.group(1)) > 500 and generated.group(1) == generated.group(2), output[-3000:]
    print(output[-1500:])
