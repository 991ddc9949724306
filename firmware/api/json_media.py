"""The one parser of JSON request bodies on the box's HTTP app: bounded in size and in nesting.

Python's json module recurses once per level of nesting, so a body of 100,000 brackets ends in
a RecursionError (a 500 with thousands of lines of traceback) on any endpoint that reads JSON,
the unauthenticated ones included. This handler, registered on the app for application/json,
reads at most MAX_JSON_BYTES, lets json.loads stop at the interpreter's recursion limit (the C
scanner checks it on every level, so the thread's stack is never at risk), then refuses anything
nested deeper than MAX_JSON_DEPTH. Every fault becomes InvalidRequest: each face's error table
answers 400 in its own shape ({error, message} or CSC's {error, error_description}) and logs
one line.

Measuring the depth of the parsed value costs less than a scan of the raw bytes would: json.loads
stops at the first syntax error, and the walk visits only what was parsed.
"""

from __future__ import annotations

import json

import falcon
from falcon.media import JSONHandler
from falcon.typing import ReadableIO

from ..errors import InvalidRequest
from .bodies import too_large

MAX_JSON_BYTES = 1024 * 1024
# No request of the box's APIs nests deeper than 4 levels (signDoc's documentDigests); 32 leaves
# room for extensions the box ignores.
MAX_JSON_DEPTH = 32


def nesting_depth(value: object) -> int:
    """How many arrays/objects deep ``value`` (a parsed JSON document) goes; walked level by level."""
    depth, level = 0, [value]
    while level := [item for item in level if isinstance(item, (dict, list))]:
        depth += 1
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)]
    return depth


class BoundedJsonHandler(JSONHandler):
    """Falcon's JSON handler with limits: 413 past ``max_bytes``, 400 past ``max_depth``."""

    def __init__(self, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> None:
        super().__init__()
        self._max_bytes = max_bytes
        self._max_depth = max_depth

    def deserialize(self, stream: ReadableIO, content_type: str | None, content_length: int | None) -> object:
        if content_length is not None and content_length > self._max_bytes:
            raise too_large(self._max_bytes)
        data = stream.read(self._max_bytes + 1)  # a chunked body has no Content-Length to check
        if len(data) > self._max_bytes:
            raise too_large(self._max_bytes)
        if not data:
            raise falcon.MediaNotFoundError("JSON")
        try:
            value = json.loads(data.decode())
            too_deep = nesting_depth(value) > self._max_depth
        except RecursionError:  # deeper than the interpreter goes, so deeper than the limit
            too_deep = True
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError alike
            raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
        if too_deep:
            raise InvalidRequest(f"the JSON body nests arrays/objects deeper than {self._max_depth} levels")
        return value
