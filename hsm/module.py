"""Loading a PKCS#11 module so that several threads may use it at once.

python-pkcs11 calls ``C_Initialize(NULL)``, which tells the module the caller is single-threaded;
SoftHSM2 then turns its own locking off and two threads signing on separate sessions corrupt its
state. We initialise the module ourselves with ``CKF_OS_LOCKING_OK`` before python-pkcs11 does,
which is what the PKCS#11 spec asks of a multi-threaded application.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

from pkcs11 import _pkcs11

log = logging.getLogger(__name__)

CKR_OK = 0x0
CKR_CANT_LOCK = 0xA
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKF_OS_LOCKING_OK = 0x2


class _InitArgs(ctypes.Structure):
    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    ]


_CK_RV_FN = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)


class _FunctionListHead(ctypes.Structure):
    """The first entries of CK_FUNCTION_LIST; enough to reach C_Initialize and C_Finalize."""

    _fields_ = [
        ("version", ctypes.c_ubyte * 2),
        ("C_Initialize", _CK_RV_FN),
        ("C_Finalize", _CK_RV_FN),
    ]


class ModuleError(RuntimeError):
    """The PKCS#11 module could not be loaded or initialised."""


class _ThreadSafeLib(_pkcs11.lib):
    """python-pkcs11's ``lib`` whose initialisation asks the module for OS locking."""

    thread_safe: bool

    def initialize(self) -> None:  # called by _pkcs11.lib.__init__
        self.thread_safe = _initialize(self.so)


def _function_list(so: str) -> _FunctionListHead:
    dll = ctypes.CDLL(so)
    get_list = dll.C_GetFunctionList
    get_list.restype = ctypes.c_ulong
    get_list.argtypes = [ctypes.POINTER(ctypes.POINTER(_FunctionListHead))]
    head = ctypes.POINTER(_FunctionListHead)()
    rv = get_list(ctypes.byref(head))
    if rv != CKR_OK:
        raise ModuleError(f"C_GetFunctionList failed for {so}: rv=0x{rv:x}")
    return head.contents


def _initialize(so: str) -> bool:
    """C_Initialize with OS locking; returns whether the module accepted multi-threaded use."""
    functions = _function_list(so)
    args = _InitArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
    rv = functions.C_Initialize(ctypes.addressof(args))
    if rv in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
        return True
    if rv == CKR_CANT_LOCK:
        log.warning("PKCS#11 module %s cannot lock; token access will be serialised", so)
        rv = functions.C_Initialize(None)
        if rv in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
            return False
    raise ModuleError(f"C_Initialize failed for {so}: rv=0x{rv:x}")


_loaded: dict[str, tuple[int, _ThreadSafeLib]] = {}
_loaded_lock = threading.Lock()


def load_module(so: str) -> _ThreadSafeLib:
    """The process's one handle on the module at ``so``, initialised again after fork()."""
    with _loaded_lock:
        entry = _loaded.get(so)
        if entry is not None and entry[0] == os.getpid():
            return entry[1]
        if entry is not None:
            # A forked child inherits the parent's module state but not its sessions;
            # PKCS#11 requires the child to initialise the module again.
            _function_list(so).C_Finalize(None)
        lib = _ThreadSafeLib(so)
        _loaded[so] = (os.getpid(), lib)
        return lib


def reload_module(so: str, stale: _ThreadSafeLib | None) -> _ThreadSafeLib:
    """Finalise and initialise the module again: the way back after a token was pulled.

    ``stale`` is the handle the caller saw fail. If the module was already reloaded since (by
    another user of it in this process), that newer handle is returned as it is: finalising it
    again would close the other user's fresh sessions, and it would then reload in turn.
    """
    with _loaded_lock:
        entry = _loaded.get(so)
        if entry is not None and entry[0] == os.getpid():
            if entry[1] is not stale:
                return entry[1]
            _function_list(so).C_Finalize(None)
            del _loaded[so]
    return load_module(so)
