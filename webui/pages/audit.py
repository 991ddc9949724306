"""The audit log: search and page through it, verify the chain, export it as JSON lines."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import falcon

from firmware.operations import reports

from ..console import Console
from ..state import record
from . import Page

MAX_PAGE = 1_000_000  # 50 million entries back: past any real log, and an OFFSET SQLite can take
MAX_SEQ = 2**63 - 1  # SQLite's largest integer


def _date_param(req: falcon.Request, name: str) -> str | None:
    """A YYYY-MM-DD filter as ISO text, None when blank; anything else is the visitor's mistake (400)."""
    text = (req.get_param(name) or "").strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise falcon.HTTPInvalidParam("a date is written YYYY-MM-DD, e.g. 2026-01-31", name) from None


class Audit(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        f = {name: (req.get_param(name) or "").strip()[:200] for name in ("action", "actor", "client", "q", "since", "until")}
        page = req.get_param_as_int("page", min_value=1, max_value=MAX_PAGE) or 1
        query = reports.AuditQuery(f["action"], f["actor"], f["client"], f["q"], _date_param(req, "since"),
                                   _date_param(req, "until"))
        found = reports.search_audit(c.db, query, page)
        link = "&".join(f"{k}={falcon.uri.encode_value(v)}" for k, v in f.items() if v)
        c.render(req, resp, "audit.html", nav="audit", entries=found.lines, total=found.total, page=page,
                 pages=found.pages, filters=f, actions=reports.audit_actions(c.db), query=link)


class Verify(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        report = reports.check_audit(c.db)
        record(c.db, c.actor(req), "audit.verify", {"ok": report.ok, "checked": report.checked,
                                                      "problems": report.problems[:5]})
        if not report.ok:
            self.failed(req, "/audit", "Audit chain BROKEN: " + "; ".join(report.problems))
        self.done(req, "/audit", f"Audit chain intact: {report.checked} entries checked, head {report.head_seq} "
                                 f"{report.head_hash[:16]}…")


class Export(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        after = req.get_param_as_int("after", min_value=0, max_value=MAX_SEQ) or 0
        record(c.db, c.actor(req), "audit.export", {"after": after})

        def lines() -> Iterator[bytes]:
            for item in reports.export_audit(c.db, after):
                yield (json.dumps(item, sort_keys=True) + "\n").encode()

        resp.content_type = "application/x-ndjson"
        resp.downloadable_as = f"esignbox-audit-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.jsonl"
        resp.stream = lines()


def add_routes(app: falcon.App[falcon.Request, falcon.Response], console: Console) -> None:
    app.add_route("/audit", Audit(console))
    app.add_route("/audit/verify", Verify(console))
    app.add_route("/audit/export", Export(console))
