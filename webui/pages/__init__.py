"""One module per console page. Each has ``add_routes(app, console)``.

Pages follow post/redirect/get: a form's POST does the change, leaves a message for the next
page and answers 303. Exceptions are the pages that show a secret once (a new API key) and
downloads (a CSR).
"""

from __future__ import annotations

from typing import NoReturn

import falcon

from ..console import Console

__all__ = ["Page"]


class Page:
    access = "admin"

    def __init__(self, console: Console) -> None:
        self.console = console

    def done(self, req: falcon.Request, location: str, message: str, kind: str = "ok") -> NoReturn:
        self.console.flash(req, kind, message)
        raise falcon.HTTPSeeOther(location)

    def failed(self, req: falcon.Request, location: str, message: str) -> NoReturn:
        self.done(req, location, message, "error")
