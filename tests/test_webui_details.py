"""Console details a person notices: counted nouns, fingerprints that wrap between bytes, chart
scales that fit the data, quota badges, a favicon."""

from __future__ import annotations

import re
from types import SimpleNamespace

from firmware.operations.reports import UsageRow
from webui.charts import usage_chart
from webui.templating import counted, environment, fingerprint


def test_nouns_are_counted_in_english():
    assert [counted(n, "call") for n in (0, 1, 2)] == ["0 calls", "1 call", "2 calls"]


def test_fingerprints_break_between_bytes_only():
    html = str(fingerprint("AB:CD:EF"))
    assert html == "AB:<wbr>CD:<wbr>EF"
    assert str(fingerprint("<b>:x")) == "&lt;b&gt;:<wbr>x"  # still escaped


def _top_label(svg: str) -> int:
    return max(int(v) for v in re.findall(r'text-anchor="end" font-size="11" fill="#555">(\d+)<', svg))


def test_chart_scale_fits_the_busiest_day():
    for busiest, top in ((0, 1), (3, 5), (7, 10), (60, 100), (150, 200), (4200, 5000)):
        rows = [UsageRow("c1", "one", "hash", "2026-12-01", busiest)] if busiest else []
        import datetime as dt

        svg = str(usage_chart(rows, {"c1": "one"}, today=dt.date(2026, 12, 4)))
        assert _top_label(svg) == top, (busiest, svg[:300])


def test_client_list_marks_an_exhausted_client():
    template = environment().get_template("clients.html")
    client = SimpleNamespace(id="abc", name="billing", active=True, calls_left=0, calls_used=5, calls_purchased=5,
                             scopes=("hash",), rate_per_minute=None, rate_per_day=None, created_at="2026-12-01",
                             disabled_at=None)
    page = template.render(clients=[client], csrf="x", scopes=("hash", "pdf"), default_scopes=("hash",),
                           free_calls=100, nav="clients", month={}, today={}, console=None, flash=[], version="t", admin="a")
    row = page[page.index("billing"):]
    assert "quota exhausted" in row[:800] and ">active<" not in row[:800]


def test_pages_name_the_favicon():
    assert '<link rel="icon" href="/static/favicon.svg"' in environment().get_template("base.html").render(
        console=None, flash=[], version="t")


def test_audit_page_names_clients_and_says_why_a_call_was_refused(box_config, clients, box):
    import base64
    import hashlib

    import requests

    from firmware.operations.reports import AuditQuery, search_audit
    from firmware.store.db import Database

    client, key = clients.add("audit-names", scopes=("pdf",))
    refused = requests.post(f"{box.url}/v1/signatures", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                            json={"hash_algorithm": "sha256", "hash": base64.b64encode(hashlib.sha256(b"x").digest()).decode()})
    assert refused.status_code == 403
    lines = search_audit(Database(box_config.database), AuditQuery(action="refusal", client=client.id)).lines
    assert lines and lines[0].client_name == "audit-names"
    assert "message=this client may not use hash signing" in lines[0].details
