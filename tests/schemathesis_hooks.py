"""Schemathesis hooks for the box (loaded through SCHEMATHESIS_HOOKS by test_openapi.py).

PDF bodies are sent as they were generated; CSC operations get a CSC access token from a fresh
auth/login (a generated auth/revoke call may have revoked the last one), the rest the API key.
"""

from __future__ import annotations

import os

import requests
import schemathesis

API_KEY = os.environ.get("ESIGNBOX_TEST_API_KEY", "")
BASE_URL = os.environ.get("ESIGNBOX_TEST_URL", "")


@schemathesis.serializer("application/pdf")
def pdf_body(context, value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


@schemathesis.auth(refresh_interval=None)
class BoxAuth:
    def get(self, case, context) -> str:
        if not case.path.startswith("/csc/"):
            return API_KEY
        response = requests.post(f"{BASE_URL}/csc/v1/auth/login",
                                 headers={"Authorization": f"Bearer {API_KEY}"}, json={}, timeout=30)
        return response.json()["access_token"]

    def set(self, case, data: str, context) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
