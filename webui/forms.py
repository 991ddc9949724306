"""The console's forms, as the pages read them: text fields and uploaded files, size-limited.

Its own module so that the application (app.py, which parses every POST) and the pages both
import it and neither imports the other.
"""

from __future__ import annotations

import urllib.parse

import falcon

MAX_FORM_BYTES = 2 * 1024 * 1024


class Form:
    """A parsed form: text fields (several values per name allowed) and uploaded files."""

    def __init__(self, values: list[tuple[str, str]] | None = None, files: dict[str, tuple[str, bytes]] | None = None) -> None:
        self.values = values or []
        self.files = files or {}

    def get(self, name: str, default: str = "") -> str:
        found = [v for k, v in self.values if k == name]
        return found[-1] if found else default

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.values if k == name]

    def file(self, name: str) -> bytes | None:
        item = self.files.get(name)
        return item[1] if item and item[1] else None


def read_form(req: falcon.Request) -> Form:
    content_type = (req.content_type or "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        body = req.bounded_stream.read(MAX_FORM_BYTES + 1)
        if len(body) > MAX_FORM_BYTES:
            raise falcon.HTTPContentTooLarge(title="Form too large")
        return Form(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if content_type == "multipart/form-data":
        values: list[tuple[str, str]] = []
        files: dict[str, tuple[str, bytes]] = {}
        try:
            for part in req.get_media():
                if part.filename is not None:
                    files[part.name] = (part.filename, part.get_data())
                else:
                    values.append((part.name, part.get_text() or ""))
        except falcon.MediaMalformedError as exc:
            raise falcon.HTTPBadRequest(title="Unreadable form", description=str(exc)) from exc
        return Form(values, files)
    return Form()
