"""The dashboard: token, key, certificate, outside services, today's signatures, quotas, storage, chart,
and the certificate directory's and the envelopes' counts when they are on."""

from __future__ import annotations

from collections.abc import Iterable

import falcon
from asn1crypto import x509

from firmware.operations import reports, token_presence
from firmware.signing import TokenSigner
from firmware.store import MB, Client, StorageState

from .. import certinfo
from ..charts import usage_chart
from ..console import Console
from ..templating import counted
from . import Page

QUOTA_WARN_FRACTION = 0.1


def signing_chain(signer: TokenSigner) -> list[x509.Certificate]:
    return [signer.signing_cert, *(c for c in signer.cert_registry if c != signer.signing_cert)]


def quota_warnings(clients: Iterable[Client], used_today: dict[str, int]) -> list[tuple[str, str, str]]:
    """(level, client name, text) for active clients that are out of, or close to, their limits."""
    warnings = []
    for client in clients:
        if not client.active:
            continue
        purchased, left = client.calls_purchased, client.calls_left
        if purchased is not None and left is not None:  # calls_left is None exactly when calls are unlimited
            if left == 0:
                warnings.append(("error", client.name, f"call quota exhausted ({counted(purchased, 'call')} used)"))
            elif left <= max(1, purchased * QUOTA_WARN_FRACTION):
                warnings.append(("warn", client.name, f"{left} of {counted(purchased, 'call')} left"))
        today = used_today.get(client.id, 0)
        if client.rate_per_day and today >= client.rate_per_day * (1 - QUOTA_WARN_FRACTION):
            warnings.append(("warn", client.name,
                             f"{today} of {counted(client.rate_per_day, 'signature')} per day used today"))
    return warnings


def storage_warnings(state: StorageState) -> list[tuple[str, str]]:
    """(level, text): a state partition running out of room stops signing, so it is an error;
    an audit log over its budget is a warning."""
    warnings = []
    if state.low_on_space:
        warnings.append(("error", f"only {state.free_bytes / MB:.1f} MB free on the state partition (warning below "
                                  f"{state.min_free_bytes / MB:.0f} MB): signing stops when it is full"))
    if state.over_budget:
        warnings.append(("warn", f"the database with the audit log is {state.db_bytes / MB:.1f} MB, over its budget "
                                 f"of {state.max_db_bytes / MB:.0f} MB: export and archive the audit log"))
    return warnings


class Dashboard(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        box = c.box
        token = token_presence(box.config, box.token)
        chain = signing_chain(box.signer)
        probes = c.prober.results(chain, box.config.tsa_urls, box.config.revocation.ocsp_urls,
                                  box.config.revocation.crl_urls)
        today = reports.today(c.db)
        storage = box.config.audit.budget.state(box.config.database)
        clients = box.clients.list()
        rows = reports.usage(c.db, None, 30)
        directory = reports.directory_counts(box.directory, c.db) if box.directory is not None else None
        envelopes = reports.contract_counts(c.db) if box.contracts is not None else None
        c.render(
            req, resp, "dashboard.html", nav="dashboard", token=token, key_label=box.signer.key_label,
            cert=certinfo.facts(box.signer.signing_cert), probes=probes,
            probe_ttl=int(c.prober.ttl_s), signed_today=today.signatures, refused_today=today.refusals,
            signed_30=sum(r.signatures for r in rows), warnings=quota_warnings(clients, today.per_client),
            chart=usage_chart(rows, {cl.id: cl.name for cl in clients}), clients=len(clients),
            storage=storage, storage_warnings=storage_warnings(storage), clock=box.clock.status(),
            directory=directory, envelopes=envelopes,
        )


def add_routes(app: falcon.App[falcon.Request, falcon.Response], console: Console) -> None:
    app.add_route("/", Dashboard(console))
