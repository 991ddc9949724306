"""The layers as the code has them, read with the standard library's ast: the firmware is below
the faces and never imports them; only hsm/ touches PKCS#11."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level names each module of ``package`` imports (function-level imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_firmware_never_imports_the_faces():
    offenders = {module: sorted(names & {"webui", "provisioning", "esignbox"})
                 for module, names in _imports("firmware").items() if names & {"webui", "provisioning", "esignbox"}}
    assert not offenders, offenders


def test_only_hsm_touches_pkcs11():
    for package in ("firmware", "webui", "provisioning"):
        offenders = [module for module, names in _imports(package).items() if "pkcs11" in names]
        assert not offenders, offenders
