"""The audit log: search and page through it, verify the chain, export it as JSON lines."""

from __future__ import annotations

import datetime as dt
import json

import falcon

from firmware.anchoring import check_anchors
from firmware.store import audit

from ..state import record
from . import Page

PAGE_SIZE = 50


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


def search(conn, action: str = "", actor: str = "", client: str = "", text: str = "",
           since: str | None = None, until: str | None = None, page: int = 1) -> tuple[list[dict], int]:
    where, params = [], []
    if action:
        where.append("action = ?")
        params.append(action)
    if actor:
        where.append("actor LIKE ? ESCAPE '\\'")
        params.append("%" + actor.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if client:
        where.append("client_id = ?")
        params.append(client)
    if text:
        where.append("instr(details, ?) > 0")
        params.append(text)
    if since:
        where.append("at >= ?")
        params.append(since)
    if until and dt.date.fromisoformat(until) < dt.date.max:  # the last day there is has no day after it
        where.append("at < ?")
        params.append((dt.date.fromisoformat(until) + dt.timedelta(days=1)).isoformat())
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = conn.execute(f"SELECT COUNT(*) FROM audit_log{clause}", params).fetchone()[0]
    rows = conn.execute(f"SELECT seq, at, actor, action, client_id, details, c.name AS client_name"
                        f" FROM audit_log LEFT JOIN clients c ON c.id = client_id{clause}"
                        " ORDER BY seq DESC LIMIT ? OFFSET ?", (*params, PAGE_SIZE, (page - 1) * PAGE_SIZE)).fetchall()
    entries = []
    for row in rows:
        item = dict(row)
        details = json.loads(item["details"])
        details.pop("timestamp_token", None)  # anchors: a long base64 blob says nothing on screen
        item["details"] = ", ".join(f"{k}={v}" for k, v in details.items() if v not in (None, ""))
        entries.append(item)
    return entries, total


class Audit(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        conn = c.db.connect()
        f = {name: (req.get_param(name) or "").strip()[:200] for name in ("action", "actor", "client", "q", "since", "until")}
        page = req.get_param_as_int("page", min_value=1, max_value=MAX_PAGE) or 1
        entries, total = search(conn, f["action"], f["actor"], f["client"], f["q"], _date_param(req, "since"),
                                _date_param(req, "until"), page)
        actions = [r[0] for r in conn.execute("SELECT DISTINCT action FROM audit_log ORDER BY action")]
        pages = max(1, -(-total // PAGE_SIZE))
        query = "&".join(f"{k}={falcon.uri.encode_value(v)}" for k, v in f.items() if v)
        c.render(req, resp, "audit.html", nav="audit", entries=entries, total=total, page=page, pages=pages,
                 filters=f, actions=actions, query=query)


class Verify(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        report = audit.verify(c.db.connect())
        problems = ([report.problem] if report.problem else []) + check_anchors(c.db)
        record(c.db, c.actor(req), "audit.verify", {"ok": not problems, "checked": report.checked,
                                                      "problems": problems[:5]})
        if problems:
            self.failed(req, "/audit", "Audit chain BROKEN: " + "; ".join(problems))
        self.done(req, "/audit", f"Audit chain intact: {report.checked} entries checked, head {report.head_seq} "
                                 f"{report.head_hash[:16]}…")


class Export(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        after = req.get_param_as_int("after", min_value=0, max_value=MAX_SEQ) or 0
        record(c.db, c.actor(req), "audit.export", {"after": after})
        conn = c.db.connect()

        def lines():
            for item in audit.export(conn, after):
                yield (json.dumps(item, sort_keys=True) + "\n").encode()

        resp.content_type = "application/x-ndjson"
        resp.downloadable_as = f"esignbox-audit-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}.jsonl"
        resp.stream = lines()


def add_routes(app: falcon.App, console) -> None:
    app.add_route("/audit", Audit(console))
    app.add_route("/audit/verify", Verify(console))
    app.add_route("/audit/export", Export(console))
