"""Package exports that load their module on first use (PEP 562 module ``__getattr__``).

Why: the signing services pull in pyHanko (about 0.3 s), and the command line's quick commands
(``config get`` in the image's health check, ``clients``, ``usage``) must not pay for it. A
package names its whole public API in ``__all__`` and for type checkers under ``TYPE_CHECKING``;
the heavy names are resolved here when first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``names`` (name → submodule) on demand."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    return __getattr__
