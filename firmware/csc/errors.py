"""Errors a CSC resource raises itself, with a code of the CSC API (§10.2): authentication and
grant-type failures the box's native API has no word for.

Every other failure on a CSC route is shown through the one error table
(firmware/operations/errors.py) by the box's handlers (firmware/api/errors.py), in CSC's
{"error", "error_description"} shape because the route is under /csc/.
"""

from __future__ import annotations

from ..api.errors import ApiError
from ..operations.errors import Face


class CscError(ApiError):
    def __init__(self, status: str | int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, code, message, headers, face=Face.CSC)
