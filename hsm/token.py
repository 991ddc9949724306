"""The one owner of the PKCS#11 token: sessions, login, keys and the sign primitive.

Concurrency rules this class enforces (see shared field notes):
- login state belongs to the token, so one logged-in session is kept open for the life of the
  connection and never closed while signing sessions exist;
- each signing thread borrows its own session from a pool; the pool has one session when the
  module could not be initialised for OS locking, so access is then serialised;
- a session or token failure (token pulled, module restarted) retires the whole pool and
  reconnects once before the caller sees an error; a fork()ed child reconnects on first use.

A token can stay away for a while (a USB token pulled, a YubiHSM connector restarting). Then:
- a connection attempt finalises and initialises the module again (SoftHSM2 sees a returned
  token store only after that) and builds a new pool; an attempt that fails closes what it
  opened, so nothing leaks however long the outage lasts;
- at most one attempt runs at a time and at most one starts per ``RECONNECT_INTERVAL_S`` across
  all threads; a request in between fails at once with ``TokenUnavailable`` instead of waiting;
- the first request (or health probe) after the token's return reconnects, so signing resumes
  by itself; ``status()`` says what is wrong meanwhile, without touching the token.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

import pkcs11
from asn1crypto import keys as asn1_keys
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.types import SignMixin
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
from pkcs11.util.rsa import encode_rsa_public_key

from .mechanisms import SignatureScheme, sign_operation
from .module import ModuleError, load_module, reload_module

if TYPE_CHECKING:  # for typing only: a runtime reference to the class changes the order of
    # interpreter-exit teardown so that python-pkcs11's lib dealloc fails ("Error in sys.excepthook")
    from .module import _ThreadSafeLib

log = logging.getLogger(__name__)
T = TypeVar("T")


class TokenError(RuntimeError):
    """A token operation failed for a reason the caller cannot fix by retrying."""


class TokenUnavailable(TokenError):
    """The token is absent, pulled, or not answering; the operation may succeed later."""


class KeyNotFound(TokenError):
    """No key with that label on the token."""


class KeyExists(TokenError):
    """A key with that label is already on the token; refusing to shadow it."""


class KeyAlgorithm(str, enum.Enum):
    RSA_2048 = "rsa2048"
    RSA_3072 = "rsa3072"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"


_RSA_BITS = {KeyAlgorithm.RSA_2048: 2048, KeyAlgorithm.RSA_3072: 3072}
_EC_CURVES = {KeyAlgorithm.EC_P256: "secp256r1", KeyAlgorithm.EC_P384: "secp384r1"}

# Errors after which the sessions we hold are no longer usable.
_CONNECTION_ERRORS = (
    pkcs11.exceptions.DeviceRemoved,
    pkcs11.exceptions.DeviceError,
    pkcs11.exceptions.TokenNotPresent,
    pkcs11.exceptions.TokenNotRecognised,
    pkcs11.exceptions.SessionHandleInvalid,
    pkcs11.exceptions.SessionClosed,
    pkcs11.exceptions.UserNotLoggedIn,
    pkcs11.exceptions.GeneralError,
    pkcs11.exceptions.KeyHandleInvalid,
    pkcs11.exceptions.ObjectHandleInvalid,
)

RECONNECT_INTERVAL_S = 1.0  # at most one connection attempt starts per interval, across threads
_CONNECT_WAIT_S = 5.0  # how long a request waits for another thread's connection attempt
_DRAIN_WAIT_S = 2.0  # how long a reload waits for borrowed sessions: C_Finalize must not race them
_ACQUIRE_TIMEOUT_S = 30.0  # how long a request waits for a session of a busy, healthy pool


@dataclass(frozen=True)
class TokenConfig:
    """Where the token is and how to log in. The PIN is kept out of repr() and so out of logs."""

    module: str
    token_label: str
    pin: str = field(repr=False)
    sessions: int = 2


@dataclass(frozen=True)
class KeyInfo:
    label: str
    key_type: str  # "rsa" or "ec"
    public_key_info: bytes  # SubjectPublicKeyInfo, DER


@dataclass(frozen=True)
class TokenStatus:
    """What the box last learned about its token, for health reports; reading it costs nothing."""

    state: str  # "ok", "unavailable" (may come back by itself) or "failed" (needs an operator)
    reason: str = ""  # never holds the PIN: built from our own messages and PKCS#11 error names
    since: float | None = None  # time.monotonic() when the token stopped being usable


class _Worker:
    """A signing session and the private-key handles found on it."""

    def __init__(self, session: pkcs11.Session, generation: int) -> None:
        self.session = session
        self.generation = generation
        self._keys: dict[str, SignMixin] = {}

    def private_key(self, label: str) -> SignMixin:
        key = self._keys.get(label)
        if key is None:
            # python-pkcs11 builds a private key's class from its attributes; a CKO_PRIVATE_KEY
            # with CKA_SIGN (all the box generates) has the sign mixin.
            key = cast(SignMixin, self.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label))
            self._keys[label] = key
        return key

    def forget(self, label: str) -> None:
        """Drop the cached handle: the key was destroyed, and a new key may take its label."""
        self._keys.pop(label, None)


class Token:
    def __init__(self, config: TokenConfig) -> None:
        self._config = config
        self._connect_lock = threading.Lock()  # one connection attempt at a time
        self._admin_lock = threading.Lock()
        self._pool = threading.Condition()  # guards the fields below it, up to _status
        self._idle: list[_Worker] = []
        self._lent: set[_Worker] = set()
        self._generation = 0
        self._up = False
        self._pid = 0
        self._status = TokenStatus("ok")
        # Connection state, changed only with _connect_lock held:
        self._lib: _ThreadSafeLib | None = None
        self._token: pkcs11.Token | None = None
        self._login: pkcs11.Session | None = None
        self._last_attempt = float("-inf")  # when the last reconnection attempt ended
        self._refusal = ""  # set when retrying cannot help (PIN rejected, token closed)
        self.thread_safe = False
        self._session_count = 0
        with self._connect_lock:
            self._connect(reload=False)

    def status(self) -> TokenStatus:
        """The token's state as last seen by a request; it does not touch the token."""
        with self._pool:
            return self._status

    # -- connection management ------------------------------------------------------------
    def _connect(self, reload: bool) -> None:
        """Open the login session and a fresh pool of signing sessions."""
        forked = self._pid not in (0, os.getpid())
        if reload and not forked:
            self._drain()
        try:
            lib, token, opened = self._open_sessions(reload)
        except pkcs11.exceptions.PinIncorrect as exc:
            # The PIN comes from the configuration and cannot change while we run; retrying it
            # would only count towards the token's lockout.
            self._refusal = "token PIN rejected"
            raise TokenError(self._refusal) from exc
        except (pkcs11.exceptions.NoSuchToken, ModuleError, *_CONNECTION_ERRORS) as exc:
            raise TokenUnavailable(
                f"token {self._config.token_label!r} not available ({type(exc).__name__})"
            ) from exc
        with self._pool:
            was_down_since = self._status.since
            self._generation += 1
            self._pid = os.getpid()
            self._token, self._login, self.thread_safe = token, opened[0], lib.thread_safe
            self._idle = [_Worker(session, self._generation) for session in opened[1:]]
            self._lent = set() if forked else self._lent
            self._session_count = len(self._idle)
            self._up = True
            self._status = TokenStatus("ok")
            self._pool.notify_all()
        if was_down_since is None:
            log.info("token %r connected with %d signing session(s)", self._config.token_label, len(opened) - 1)
        else:
            log.warning("token %r back after %.1f s", self._config.token_label, time.monotonic() - was_down_since)

    def _open_sessions(self, reload: bool) -> tuple[_ThreadSafeLib, pkcs11.Token, list[pkcs11.Session]]:
        """The module, the token and its sessions, login session first. Closes what it opened
        if it fails: a token such as the YubiHSM2 serves only a few device sessions."""
        so = self._config.module
        self._lib = lib = reload_module(so, stale=self._lib) if reload else load_module(so)
        token = lib.get_token(token_label=self._config.token_label)
        opened: list[pkcs11.Session] = []
        try:
            try:
                opened.append(token.open(user_pin=self._config.pin, rw=True))
            except pkcs11.exceptions.UserAlreadyLoggedIn:
                opened.append(token.open(rw=True))
            count = max(1, self._config.sessions) if lib.thread_safe else 1
            opened.extend(token.open() for _ in range(count))
        except BaseException:
            _close_quietly(reversed(opened))  # signing sessions first, the login one last
            raise
        return lib, token, opened

    def _drain(self) -> None:
        """Wait (bounded) until borrowed sessions are back: finalising must not race their calls."""
        with self._pool:
            if not self._pool.wait_for(lambda: not self._lent, timeout=_DRAIN_WAIT_S):
                log.warning("reloading the token module with %d session(s) still in use", len(self._lent))

    def _reconnect(self, seen_generation: int) -> None:
        """Connect again unless another thread just did; fail fast while attempts are rate-limited."""
        if not self._connect_lock.acquire(timeout=_CONNECT_WAIT_S):
            raise TokenUnavailable(self._unavailable_reason())
        try:
            forked = self._pid != os.getpid()
            with self._pool:
                if self._up and not forked and self._generation != seen_generation:
                    return  # another thread reconnected while we waited
            if self._refusal:
                raise TokenError(self._refusal)
            if not forked and time.monotonic() - self._last_attempt < RECONNECT_INTERVAL_S:
                raise TokenUnavailable(self._unavailable_reason())
            if not forked:
                log.info("reconnecting to token %r", self._config.token_label)
            try:
                self._connect(reload=True)
            except TokenError as exc:
                self._mark_down("failed" if self._refusal else "unavailable", str(exc))
                raise
            finally:  # measured from the end, so that slow attempts do not run back to back
                self._last_attempt = time.monotonic()
        finally:
            self._connect_lock.release()

    def _unavailable_reason(self) -> str:
        with self._pool:
            return self._status.reason or f"token {self._config.token_label!r} is reconnecting"

    def _mark_down(self, state: str, reason: str) -> None:
        with self._pool:
            if self._status.state != state or self._status.reason != reason:
                log.warning("token %r %s: %s", self._config.token_label, state, reason)
            self._status = TokenStatus(state, reason, self._status.since or time.monotonic())

    def _retire(self, worker: _Worker, failure: BaseException) -> None:
        """``worker``'s session failed as if the token went away: retire its whole pool.

        The retired sessions are not closed one by one: the reconnection finalises the module,
        which closes them all, and closing a handle after that could close a new session.
        """
        with self._pool:
            self._give_back(worker)
            if worker.generation == self._generation and self._up:
                self._up = False
                self._generation += 1
                self._idle = []
                self._pool.notify_all()
                lost = True
            else:
                lost = False
        if lost:
            self._mark_down("unavailable", f"token session failed ({type(failure).__name__})")

    def _acquire(self) -> _Worker:
        deadline = time.monotonic() + _ACQUIRE_TIMEOUT_S
        while True:
            with self._pool:
                while self._up and self._pid == os.getpid():
                    if self._idle:
                        worker = self._idle.pop()
                        self._lent.add(worker)
                        return worker
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TokenUnavailable("timed out waiting for a token session")
                    self._pool.wait(remaining)
                seen = self._generation
            self._reconnect(seen)

    def _release(self, worker: _Worker) -> None:
        with self._pool:
            self._give_back(worker)
            if worker.generation == self._generation and self._up:
                self._idle.append(worker)
                self._pool.notify_all()

    def _give_back(self, worker: _Worker) -> None:
        """Called with _pool held: ``worker`` is no longer borrowed (a reload may be draining)."""
        self._lent.discard(worker)
        if not self._lent:
            self._pool.notify_all()

    def _is_lost(self, worker: _Worker, exc: pkcs11.exceptions.PKCS11Error) -> bool:
        """Whether ``exc`` means the session (and so the pool) is gone rather than the request bad."""
        if isinstance(exc, _CONNECTION_ERRORS) or worker.generation != self._generation:
            return True
        # python-pkcs11 raises the bare base class only for return values it has no class for,
        # such as CKR_CRYPTOKI_NOT_INITIALIZED after the module was finalised under us.
        if type(exc) is pkcs11.exceptions.PKCS11Error:
            return True
        if isinstance(exc, pkcs11.exceptions.NoSuchKey):
            # SoftHSM2 answers a search on a vanished token store with "no objects"; ask the
            # token itself before blaming the key.
            try:
                worker.session.token.slot.get_token()
            except pkcs11.exceptions.PKCS11Error:
                return True
        return False

    def _run(self, operation: Callable[[_Worker], T]) -> T:
        """Run ``operation`` on a pooled session, reconnecting once if the token went away."""
        for attempt in (1, 2):
            worker = self._acquire()
            failure: pkcs11.exceptions.PKCS11Error | None = None
            try:
                return operation(worker)
            except pkcs11.exceptions.PKCS11Error as exc:
                if not self._is_lost(worker, exc):
                    if isinstance(exc, pkcs11.exceptions.NoSuchKey):
                        raise KeyNotFound(str(exc) or "no such key") from exc
                    raise TokenError(f"token operation failed ({type(exc).__name__})") from exc
                failure = exc
            finally:
                if failure is None:
                    self._release(worker)
                else:
                    self._retire(worker, failure)
            if attempt == 2:
                raise TokenUnavailable(f"token operation failed ({type(failure).__name__})") from failure
        raise AssertionError("unreachable")

    # -- signing ----------------------------------------------------------------------------
    def sign_digest(
        self, key_label: str, digest: bytes, hash_algorithm: str, scheme: SignatureScheme,
        salt_length: int | None = None,
    ) -> bytes:
        """Sign a precomputed digest. ECDSA signatures come back DER-encoded, as CMS wants them."""
        op = sign_operation(scheme, hash_algorithm, digest, salt_length)

        def sign(worker: _Worker) -> bytes:
            raw = worker.private_key(key_label).sign(op.payload, mechanism=op.mechanism, mechanism_param=op.param)
            return op.finish(raw)

        return self._run(sign)

    # -- key management -----------------------------------------------------------------------
    def generate_key(self, label: str, algorithm: KeyAlgorithm) -> KeyInfo:
        """Generate a key pair on the token; the private half is sensitive and never extractable."""
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
        }
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True}

        def generate(worker: _Worker) -> None:
            with self._admin_lock:
                session = self._login
                assert session is not None
                if self._find(session, ObjectClass.PRIVATE_KEY, label) is not None:
                    raise KeyExists(f"a key labelled {label!r} already exists on the token")
                if algorithm in _RSA_BITS:
                    session.generate_keypair(
                        KeyType.RSA, _RSA_BITS[algorithm], label=label, store=True,
                        public_template=public_template, private_template=private_template,
                    )
                else:
                    params = session.create_domain_parameters(
                        KeyType.EC,
                        {Attribute.EC_PARAMS: encode_named_curve_parameters(_EC_CURVES[algorithm])},
                        local=True,
                    )
                    params.generate_keypair(
                        label=label, store=True,
                        public_template=public_template, private_template=private_template,
                    )

        self._run(generate)
        return self.key(label)

    def destroy_key(self, label: str) -> None:
        """Destroy both halves of a key pair; KeyNotFound if the token has neither.

        The private half goes first: if the box dies in between, what is left is a public key,
        which ``keys()`` lists, so a clean-up at start finds it and finishes the job. Every
        session forgets its cached handle, so a later key with the same label is looked up afresh.
        """

        def destroy(worker: _Worker) -> None:
            with self._admin_lock:
                session = self._login
                assert session is not None
                found = [
                    obj for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
                    for obj in session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label})
                ]
                if not found:
                    raise KeyNotFound(f"no key labelled {label!r} on the token")
                for obj in found:
                    obj.destroy()
            with self._pool:
                for each in (*self._idle, *self._lent):
                    each.forget(label)

        self._run(destroy)

    def key(self, label: str) -> KeyInfo:
        """The public half of a token key, as SubjectPublicKeyInfo."""

        def read(worker: _Worker) -> KeyInfo:
            public = cast(pkcs11.PublicKey, worker.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label))
            return _key_info(label, public)

        return self._run(read)

    def keys(self) -> list[KeyInfo]:
        def read(worker: _Worker) -> list[KeyInfo]:
            found = cast(Iterable[pkcs11.PublicKey],
                         worker.session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY}))
            return sorted((_key_info(obj.label, obj) for obj in found), key=lambda k: k.label)

        return self._run(read)

    def private_key_attributes(self, label: str) -> dict[str, bool]:
        """The protection flags of a private key, for operators and for the tests that prove them."""
        names = ("SENSITIVE", "EXTRACTABLE", "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE", "LOCAL")

        def read(worker: _Worker) -> dict[str, bool]:
            key = worker.private_key(label)
            return {name.lower(): bool(key[getattr(Attribute, name)]) for name in names}

        return self._run(read)

    def info(self) -> dict[str, object]:
        token = self._token
        assert token is not None
        return {
            "label": token.label,
            "manufacturer": token.manufacturer_id,
            "model": token.model,
            "serial": token.serial.decode() if isinstance(token.serial, bytes) else token.serial,
            "thread_safe": self.thread_safe,
            "sessions": self._session_count,
        }

    def close(self) -> None:
        """Close every session, the login session last (closing it logs the token out); the
        token refuses further use rather than reloading the module under other users of it."""
        with self._connect_lock:
            self._refusal = "token closed"
            with self._pool:
                self._up = False
                self._generation += 1
                idle, self._idle = self._idle, []
                self._status = TokenStatus("failed", self._refusal, time.monotonic())
                self._pool.notify_all()
            _close_quietly(worker.session for worker in idle)
            if self._login is not None:
                _close_quietly([self._login])
                self._login = None

    @staticmethod
    def _find(session: pkcs11.Session, object_class: ObjectClass, label: str) -> pkcs11.Object | None:
        for obj in session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}):
            return obj
        return None


def _close_quietly(sessions: Iterable[pkcs11.Session]) -> None:
    """Close sessions that may already be dead; a failure here changes nothing for the caller."""
    for session in sessions:
        try:
            session.close()
        except pkcs11.exceptions.PKCS11Error as exc:
            log.debug("closing a token session failed (%s)", type(exc).__name__)


def _key_info(label: str, public: pkcs11.PublicKey) -> KeyInfo:
    if public.key_type == KeyType.RSA:
        spki = asn1_keys.PublicKeyInfo(
            {
                "algorithm": {"algorithm": "rsa"},
                "public_key": asn1_keys.RSAPublicKey.load(encode_rsa_public_key(public)),
            }
        ).dump()
        return KeyInfo(label, "rsa", spki)
    if public.key_type == KeyType.EC:
        return KeyInfo(label, "ec", encode_ec_public_key(public))
    raise TokenError(f"key {label!r} has unsupported type {public.key_type!r}")
