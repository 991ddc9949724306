"""The layers as the code has them, read with the standard library's ast: the firmware is below
the faces and never imports them; only hsm/ touches PKCS#11."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
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


LAYERED = ("firmware", "hsm", "webui", "provisioning", "esignbox.py")
HEAVY = "optional heavy dependency"  # the comment that allows an import inside a function


def _sources() -> dict[str, Path]:
    """Module name → file, for every module of the layered packages and the entry point."""
    modules: dict[str, Path] = {}
    for top in LAYERED:
        for path in [ROOT / top] if top.endswith(".py") else sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _module_level(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: outside functions and classes, and not only
    for type checkers (``if TYPE_CHECKING:``)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(block)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(tree.body)
    return found


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The layered modules an import statement loads: relative imports resolved; ``from package
    import name`` is the submodule when there is one, else the package (its __init__)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    source = ".".join(p for p in (base if node.level else "", node.module or "") if p)
    found = {f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in known}
    if source in known and len(found) < len(node.names):
        found.add(source)
    return found


def _import_graph() -> dict[str, set[str]]:
    sources = _sources()
    known = set(sources)
    return {module: {target for node in _module_level(ast.parse(path.read_text(), str(path)))
                     for target in _targets(module, path, node, known)} - {module}
            for module, path in sources.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = _import_graph()
    assert "webui.app" in graph["webui.server"] and "firmware.certificates" in graph["firmware.box"]  # it is read
    assert _cycle(graph) is None, " → ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_imports_inside_functions_unless_marked_heavy():
    offenders = []
    for path in _sources().values():
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not _marked(lines, node.lineno):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not offenders, "\n".join(offenders)


def _marked(lines: list[str], lineno: int) -> bool:
    """The import's line, or the comment lines and imports just above it, say it is a heavy dependency."""
    index = lineno - 1
    if HEAVY in lines[index]:
        return True
    index -= 1
    while index >= 0 and lines[index].strip().startswith(("#", "from ", "import ")):
        if HEAVY in lines[index]:
            return True
        index -= 1
    return False


PACKAGES = sorted(name for name in _sources() if (ROOT / name.replace(".", "/") / "__init__.py").exists())


def test_every_package_names_its_public_api_and_each_name_resolves():
    missing, broken = [], []
    for name in PACKAGES:
        package = importlib.import_module(name)
        if not hasattr(package, "__all__"):
            missing.append(name)
            continue
        broken += [f"{name}.{attr}" for attr in package.__all__ if not hasattr(package, attr)]
    assert PACKAGES and not missing and not broken, (missing, broken)


def test_every_top_package_ships_its_type_hints():
    assert [top for top in LAYERED if not top.endswith(".py") and not (ROOT / top / "py.typed").exists()] == []


def test_the_command_line_starts_without_the_signing_services():
    """`esignbox config get` runs in the image's health check: it must not load pyHanko (~0.3 s)."""
    probe = "import sys, esignbox, firmware.operations, firmware.signing; print('pyhanko' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_the_faces_import_firmware_subpackages_not_their_modules():
    """webui/, provisioning/ and the entry point use what a firmware subpackage names in __all__."""
    subpackages = {name for name in PACKAGES if name.startswith("firmware.")}
    offenders = []
    for module, path in _sources().items():
        if module.startswith(("firmware", "hsm")):
            continue
        for node in _module_level(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.rpartition(".")[0] in subpackages:
                offenders.append(f"{module}: from {node.module} import …")
    assert not offenders, offenders
