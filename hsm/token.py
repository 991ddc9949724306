"""The one owner of the PKCS#11 token: sessions, login, keys and the sign primitive.

Concurrency rules this class enforces (see shared field notes):
- login state belongs to the token, so one logged-in session is kept open for the life of the
  process and never closed while signing sessions exist;
- each signing thread borrows its own session from a pool; the pool has one session when the
  module could not be initialised for OS locking, so access is then serialised;
- a session or token failure (token pulled, module restarted) tears everything down and
  reconnects once before the caller sees an error; a fork()ed child reconnects on first use.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import pkcs11
from asn1crypto import keys as asn1_keys
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
from pkcs11.util.rsa import encode_rsa_public_key

from .mechanisms import SignatureScheme, sign_operation
from .module import ModuleError, load_module, reload_module

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

_ACQUIRE_TIMEOUT_S = 30.0


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


class _Worker:
    """A signing session and the private-key handles found on it."""

    def __init__(self, session: pkcs11.Session, generation: int) -> None:
        self.session = session
        self.generation = generation
        self._keys: dict[str, pkcs11.PrivateKey] = {}

    def private_key(self, label: str) -> pkcs11.PrivateKey:
        key = self._keys.get(label)
        if key is None:
            key = self.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            self._keys[label] = key
        return key


class Token:
    def __init__(self, config: TokenConfig) -> None:
        self._config = config
        self._generation = 0
        self._pid = 0
        self._connect_lock = threading.Lock()
        self._admin_lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._token: pkcs11.Token | None = None
        self._login: pkcs11.Session | None = None
        self.thread_safe = False
        self._session_count = 0
        with self._connect_lock:
            self._connect(reload=False)

    # -- connection management ------------------------------------------------------------
    def _connect(self, reload: bool) -> None:
        so = self._config.module
        try:
            lib = reload_module(so) if reload else load_module(so)
            token = lib.get_token(token_label=self._config.token_label)
            try:
                login = token.open(user_pin=self._config.pin, rw=True)
            except pkcs11.exceptions.UserAlreadyLoggedIn:
                login = token.open(rw=True)
            count = max(1, self._config.sessions) if lib.thread_safe else 1
            workers = [token.open() for _ in range(count)]
        except pkcs11.exceptions.PinIncorrect as exc:
            raise TokenError("token PIN rejected") from exc
        except (pkcs11.exceptions.NoSuchToken, ModuleError, *_CONNECTION_ERRORS) as exc:
            raise TokenUnavailable(
                f"token {self._config.token_label!r} not available ({type(exc).__name__})"
            ) from exc
        self._generation += 1
        self._pid = os.getpid()
        self._token, self._login, self.thread_safe = token, login, lib.thread_safe
        self._session_count = len(workers)
        while True:  # drop the previous generation's idle sessions
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
        for session in workers:
            self._idle.put(_Worker(session, self._generation))
        log.info("token %r connected with %d signing session(s)", self._config.token_label, len(workers))

    def _reconnect(self, seen_generation: int) -> None:
        with self._connect_lock:
            if self._generation != seen_generation and self._pid == os.getpid():
                return  # another thread already reconnected
            log.warning("reconnecting to token %r", self._config.token_label)
            self._connect(reload=True)

    def _acquire(self) -> _Worker:
        if self._pid != os.getpid():
            self._reconnect(self._generation)
        try:
            return self._idle.get(timeout=_ACQUIRE_TIMEOUT_S)
        except queue.Empty as exc:
            raise TokenUnavailable("timed out waiting for a token session") from exc

    def _release(self, worker: _Worker) -> None:
        if worker.generation == self._generation:
            self._idle.put(worker)

    def _run(self, operation: Callable[[_Worker], T]) -> T:
        """Run ``operation`` on a pooled session, reconnecting once if the token went away."""
        for attempt in (1, 2):
            worker = self._acquire()
            try:
                result = operation(worker)
            except pkcs11.exceptions.NoSuchKey as exc:
                self._release(worker)
                raise KeyNotFound(str(exc) or "no such key") from exc
            except _CONNECTION_ERRORS as exc:
                if attempt == 2:
                    raise TokenUnavailable(f"token operation failed ({type(exc).__name__})") from exc
                self._reconnect(worker.generation)
                continue
            except pkcs11.exceptions.PKCS11Error as exc:
                self._release(worker)
                raise TokenError(f"token operation failed ({type(exc).__name__})") from exc
            self._release(worker)
            return result
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

    def key(self, label: str) -> KeyInfo:
        """The public half of a token key, as SubjectPublicKeyInfo."""

        def read(worker: _Worker) -> KeyInfo:
            public = worker.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
            return _key_info(label, public)

        return self._run(read)

    def keys(self) -> list[KeyInfo]:
        def read(worker: _Worker) -> list[KeyInfo]:
            found = worker.session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY})
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
        """Close every session; the login session last, since closing it logs the token out."""
        with self._connect_lock:
            self._generation += 1
            while True:
                try:
                    self._idle.get_nowait().session.close()
                except queue.Empty:
                    break
            if self._login is not None:
                self._login.close()
                self._login = None

    @staticmethod
    def _find(session: pkcs11.Session, object_class: ObjectClass, label: str) -> pkcs11.Object | None:
        for obj in session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}):
            return obj
        return None


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
