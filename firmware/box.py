"""Assembling a running box from its configuration: token → signer → services → HTTP app.

Data flows one way: an HTTP resource calls a service, the service calls the signer, the signer
calls the token. This module is the only place that knows all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import falcon
from asn1crypto import x509

from hsm import Token

from .api import errors
from .api.auth import ApiKeyAuth, RefusalAudit
from .api.client_ip import ClientAddress
from .api.contracts import SIGNER_CA_CRL_PATH, CrlResource, add_contract_routes
from .api.directory import add_directory_routes
from .api.info import CertificateResource, HealthResource
from .api.json_media import BoundedJsonHandler
from .api.mail import MailResource, MailStatusResource
from .api.openapi import OpenApiResource
from .api.otp import OtpResource, OtpVerifyResource
from .api.pdf import PdfSignResource, PdfVerifyResource
from .api.signatures import SignatureBatchResource, SignatureResource
from .api.usage import UsageResource
from .certificates import check_chain, load_certificates
from .config import BoxConfig, ConfigError
from .contracts import ContractsService
from .csc.routes import CscSessions, add_csc_routes
from .directory import DirectoryService, ProofSender, UndeliveredProofs
from .errors import InvalidRequest
from .mail.outbox import Outbox, OutboxSender, RelaySettings
from .mail.service import MailPolicy, MailService, NoDirectory, RecipientDirectory
from .mail.smime import SmimeSigner
from .operations.contract_links import InvitationsByMail
from .operations.directory_links import CodeByMail, DirectoryRecipients, ProofByMail
from .operations.keys import chain_path
from .otp import OtpCodes
from .outbound import apply_outbound
from .signing.clock import ClockWatch
from .signing.contract_signing import ContractSigning
from .signing.hash_signing import HashSigningService
from .signing.party_signatures import PartySigner
from .signing.pdf_signing import PdfSigningService
from .signing.raw_signing import RawSigningService
from .signing.revocation import RevocationService
from .signing.stamp_look import StampLook
from .signing.timestamps import FallbackTimeStamper
from .signing.token_signer import TokenSigner
from .signpage import add_signing_page_routes
from .store.clients import ClientRegistry
from .store.clock_readings import ClockReadings
from .store.db import Database
from .store.ledger import SignatureLedger


@dataclass
class Box:
    config: BoxConfig
    token: Token
    clock: ClockWatch
    signer: TokenSigner
    timestamper: FallbackTimeStamper | None
    revocation: RevocationService
    db: Database
    clients: ClientRegistry
    ledger: SignatureLedger
    hash_signing: HashSigningService
    pdf_signing: PdfSigningService
    raw_signing: RawSigningService
    csc_sessions: CscSessions
    outbox: Outbox
    mail: MailService | None  # None: no [mail] relay_host, POST /v1/mail answers 503
    # Reports from parts beside the signing path (the console's nginx), shown by /v1/health; the
    # same dict is handed to every reassembled Box, so a face registers once.
    health_parts: dict[str, Callable[[], dict[str, object]]] = field(default_factory=dict)
    # The certificate directory ([directory] enabled), and what mails its proofs of mailbox control
    # (the S/MIME mailer once there is one; handed on to every reassembled Box, like health_parts).
    directory: DirectoryService | None = None
    proof_sender: ProofSender = field(default_factory=UndeliveredProofs)
    otp: OtpCodes | None = None  # one-time codes by mail; None without a mail relay
    # Envelopes ([contracts] enabled) and their signing, whose signer CA's CRL the API serves.
    contracts: ContractsService | None = None
    contract_signing: ContractSigning | None = None

    @classmethod
    def open(cls, config: BoxConfig, proof_sender: ProofSender | None = None) -> Box:
        db = Database(config.database)
        ledger = SignatureLedger(db, config.audit.refusal_window_s, config.audit.budget)
        return cls.assemble(config, Token(config.token_config()), db, ClientRegistry(db), ledger,
                            proof_sender=proof_sender)

    @classmethod
    def assemble(
        cls, config: BoxConfig, token: Token, db: Database, clients: ClientRegistry, ledger: SignatureLedger,
        csc_sessions: CscSessions | None = None, health_parts: dict[str, Callable[[], dict[str, object]]] | None = None,
        proof_sender: ProofSender | None = None,
    ) -> Box:
        """The signing services for ``config`` around an open token and database (the console's
        key rollover reassembles them without closing the token's logged-in session)."""
        apply_outbound(config.outbound)
        chain = load_certificates(config.chain_file)
        try:  # a chain for another key would make every signature fail while health said ok
            check_chain(token, config.key_label, chain)
        except InvalidRequest as exc:
            raise ConfigError(
                f"{config.chain_file}: {exc}; install the chain issued for this key (esignbox import-chain)"
                " or switch [signing] key_label back to the key it was issued for"
            ) from exc
        clock = ClockWatch(config.max_clock_skew_s, shared=ClockReadings(db))
        signer = TokenSigner(token, config.key_label, chain, prefer_pss=config.prefer_pss, clock=clock)
        timestamper = FallbackTimeStamper(config.tsa_urls, clock=clock) if config.tsa_urls else None
        if timestamper is not None:
            clock.probe = timestamper.probe
        revocation = RevocationService(load_certificates(config.trust_roots_file),
                                       ocsp_urls=config.revocation.ocsp_urls, crl_urls=config.revocation.crl_urls)
        hash_signing = HashSigningService(signer, timestamper, revocation, ledger)
        pdf_signing = PdfSigningService(
            signer, timestamper, revocation, ledger, config.max_pdf_bytes, StampLook.from_config(config)
        )
        raw_signing = RawSigningService(token, signer, ledger)
        outbox = Outbox(db)
        # The directory and the mailer need each other: the mailer encrypts to the directory's
        # published certificates, and the directory mails its proofs of mailbox control.
        directory = None
        if config.directory.enabled:
            roots = revocation.with_trust_roots(load_certificates(config.directory.trust_roots_file))
            directory = DirectoryService(db, roots, config.directory, proof_sender or UndeliveredProofs())
        recipients = DirectoryRecipients(directory, db) if directory is not None else NoDirectory()
        mail = _mail_service(config, db, outbox, SmimeSigner(_mail_signer(config, token, signer, clock)), recipients)
        if directory is not None and proof_sender is None and mail is not None:
            directory.sender = ProofByMail(mail)
        contracts = _contracts(config, db, token, clock, timestamper, revocation, pdf_signing, mail)
        return cls(
            config, token, clock, signer, timestamper, revocation, db, clients, ledger, hash_signing, pdf_signing, raw_signing,
            csc_sessions or CscSessions.open(db), outbox, mail, health_parts if health_parts is not None else {},
            directory, directory.sender if directory is not None else UndeliveredProofs(),
            OtpCodes(db, config.state_dir, CodeByMail(mail)) if mail is not None else None,
            *(contracts or (None, None)),
        )

    def mail_sender(self) -> OutboxSender | None:
        """The outbox's delivery thread for `esignbox serve` to start and stop; None without a relay."""
        relay = relay_settings(self.config)
        return None if relay is None else OutboxSender(self.outbox, relay)

    def app(self) -> falcon.App[falcon.Request, falcon.Response]:
        middleware: list[ClientAddress | RefusalAudit | ApiKeyAuth] = [
            ClientAddress(self.config.api.trusted_networks), RefusalAudit(self.ledger), ApiKeyAuth(self.clients)]
        app = falcon.App(middleware=middleware)
        errors.register(app)
        app.req_options.media_handlers[falcon.MEDIA_JSON] = BoundedJsonHandler()
        app.add_route("/v1/health", HealthResource(self.token, self.signer, self.clock, self.health_parts))
        app.add_route("/v1/certificate", CertificateResource(self.signer))
        level = self.config.default_level
        app.add_route("/v1/signatures", SignatureResource(self.hash_signing, level))
        app.add_route("/v1/signatures/batch", SignatureBatchResource(self.hash_signing, level))
        app.add_route("/v1/pdf/sign", PdfSignResource(self.pdf_signing, level))
        app.add_route("/v1/pdf/verify", PdfVerifyResource(self.revocation, self.config.max_pdf_bytes))
        app.add_route("/v1/usage", UsageResource(self.db, self.clients))
        app.add_route("/v1/mail", MailResource(self.mail))
        app.add_route("/v1/mail/{mail_id}", MailStatusResource(self.outbox))
        app.add_route("/v1/otp", OtpResource(self.otp))
        app.add_route("/v1/otp/verify", OtpVerifyResource(self.otp))
        app.add_route("/openapi.json", OpenApiResource(level, directory=self.directory is not None,
                                                         contracts=self.contracts is not None))
        if self.directory is not None:
            add_directory_routes(app, self.directory)
        if self.contracts is not None and self.contract_signing is not None:
            add_contract_routes(app, self.contracts, self.config.max_pdf_bytes)
            app.add_route(SIGNER_CA_CRL_PATH, CrlResource(self.contract_signing.crl_der))
            add_signing_page_routes(app, self.contracts, self.config.state_dir, self.config.contracts.organisation)
        add_csc_routes(
            app, sessions=self.csc_sessions, signer=self.signer, raw_signing=self.raw_signing, hash_signing=self.hash_signing,
            timestamper=self.timestamper, clients=self.clients, ledger=self.ledger,
        )
        return app


def relay_settings(config: BoxConfig) -> RelaySettings | None:
    """[mail] as the outbox's sender reads it; None: no relay configured."""
    mail = config.mail
    if mail.relay_host is None:
        return None
    return RelaySettings(
        host=mail.relay_host, port=mail.relay_port, starttls=mail.starttls, username=mail.username,
        password_file=mail.password_file, ca_file=mail.relay_ca_file, timeout_s=mail.timeout_seconds,
        max_attempts=mail.max_attempts, backoff_s=mail.retry_seconds, max_backoff_s=mail.max_retry_seconds,
        lease_s=10 * mail.timeout_seconds,  # a transaction is a handful of commands, each within the timeout
    )


def _mail_signer(config: BoxConfig, token: Token, signer: TokenSigner, clock: ClockWatch) -> TokenSigner:
    """The box's mail key ([mail] key_label) with its chain from the key life cycle, or the signing key."""
    label = config.mail.key_label
    if label is None:
        return signer
    return TokenSigner(token, label, _own_chain(config, token, label, "[mail] key_label"), prefer_pss=config.prefer_pss,
                       clock=clock)


def _own_chain(config: BoxConfig, token: Token, label: str, setting: str) -> list[x509.Certificate]:
    """The chain of one of the box's other keys (chains/<label>.pem, from the key life cycle),
    checked against the key on the token: a mismatch is a configuration error at start."""
    chain_file = chain_path(config.state_dir, label)
    try:
        chain = load_certificates(chain_file)
        check_chain(token, label, chain)
    except InvalidRequest as exc:
        raise ConfigError(f"{setting} {label!r}: {chain_file}: {exc}") from exc
    return chain


def _contracts(config: BoxConfig, db: Database, token: Token, clock: ClockWatch,
               timestamper: FallbackTimeStamper | None, revocation: RevocationService, pdf_signing: PdfSigningService,
               mail: MailService | None) -> tuple[ContractsService, ContractSigning] | None:
    """[contracts]: the envelope service and its signing (the parties' keys under the box's signer CA)."""
    settings = config.contracts
    if not settings.enabled:
        return None
    if timestamper is None:
        raise ConfigError("[contracts] enabled needs [signing] tsa_urls: every party's signature is timestamped")
    label = settings.signer_ca_label
    chain = _own_chain(config, token, label, "[contracts] signer_ca_label")
    base = settings.public_base_url or f"http://{config.api_host}:{config.api_port}"
    parties = PartySigner(token, label, chain, timestamper, revocation, base.rstrip("/") + SIGNER_CA_CRL_PATH,
                          config.max_pdf_bytes, StampLook.from_config(config), clock)
    signing = ContractSigning(parties, pdf_signing, settings.organisation)
    codes = OtpCodes(db, config.state_dir, CodeByMail(mail, charged=False)) if mail is not None else None
    service = ContractsService(db, config.state_dir, signing, codes, InvitationsByMail(mail, settings.organisation),
                               settings, config.webhooks)
    return service, signing


def _mail_service(config: BoxConfig, db: Database, outbox: Outbox, signer: SmimeSigner,
                  directory: RecipientDirectory) -> MailService | None:
    if config.mail.relay_host is None or config.mail.from_address is None:
        return None
    policy = MailPolicy(config.mail.from_address, config.mail.notice_subject, config.mail.notice_text)
    return MailService(db, outbox, signer, directory, policy)
