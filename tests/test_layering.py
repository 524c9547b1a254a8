"""The architecture rules of STYLE.md, checked on the source, not trusted."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import keysentry

SRC = Path(keysentry.__file__).parent
# core/ is pure: no I/O, no clock, no frameworks (STYLE.md rule 4)
CORE_ALLOWED = {
    "__future__",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "functools",
    "hashlib",
    "hmac",
    "importlib",  # keys.py picks CPython's own SHA-256 module by name
    "ipaddress",
    "json",
    "operator",
    "re",
    "secrets",
    "typing",
    "zlib",
    "keysentry",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_nothing_from_the_io_world() -> None:
    for path in sorted((SRC / "core").glob("*.py")):
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top in CORE_ALLOWED, f"{path.name} imports {module}"
            if top == "keysentry":
                assert module.startswith(("keysentry.core", "keysentry.errors")), module


def test_core_never_reads_the_clock() -> None:
    for path in sorted((SRC / "core").glob("*.py")):
        text = path.read_text()
        for call in ("time.time", "time.monotonic", "datetime.now", "datetime.utcnow"):
            assert call not in text, f"{path.name} calls {call}"


def test_import_keysentry_loads_no_optional_or_heavy_dependency() -> None:
    code = (
        "import sys, keysentry, keysentry.testing, keysentry.cli\n"
        "heavy = {'redis', 'psycopg', 'flask', 'fastapi', 'starlette', 'werkzeug', "
        "'sqlalchemy', 'uvicorn', 'httpx', 'jinja2', 'itsdangerous', 'prometheus_client'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def written_docstring(obj: object) -> str:
    """The docstring someone wrote: not a NamedTuple's generated ``Name(a, b)``, nor one
    inherited from a base class."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    fields = getattr(obj, "_fields", None)
    if isinstance(obj, type) and fields is not None and doc is not None:
        generated = re.fullmatch(rf"{obj.__name__}\((.*)\)", doc)
        if generated and generated.group(1).rstrip(",") == ", ".join(fields):
            return ""
    return (doc or "").strip()


def test_public_names_are_documented() -> None:
    for name in keysentry.__all__:
        if name != "__version__":
            assert written_docstring(getattr(keysentry, name)), f"{name} has no docstring"


def test_the_docstring_check_sees_generated_ones() -> None:
    from typing import NamedTuple

    class Bare(NamedTuple):
        a: int

    class Written(NamedTuple):
        """Written."""

        a: int

    assert written_docstring(Bare) == ""
    assert written_docstring(Written) == "Written."


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """The keysentry modules *path* imports when it runs, lazy imports inside functions
    included; ``if TYPE_CHECKING:`` blocks excluded."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # "from pkg import module"
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {
        name: {m for m in runtime_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return found


def test_no_import_cycle_inside_keysentry() -> None:
    # a package's __init__ re-exporting its modules is not a cycle through them
    graph = import_graph()
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    assert cycles(graph) == []


def test_the_cycle_check_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


ADAPTERS = ("keysentry.asgi", "keysentry.wsgi", "keysentry.decorators", "keysentry.fastapi",
            "keysentry.flask", "keysentry.admin", "keysentry.dashboard",
            "keysentry.portal")  # fmt: skip


def is_adapter(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ADAPTERS)


def test_adapters_do_not_import_each_other() -> None:
    for name, targets in import_graph().items():
        if is_adapter(name):
            family = name.split(".")[1]  # admin's modules may import each other
            others = [t for t in targets if is_adapter(t) and t.split(".")[1] != family]
            assert others == [], f"{name} imports {others}"


def test_management_and_verification_import_no_adapter() -> None:
    graph = import_graph()
    inner = [n for n in graph if n.startswith(("keysentry.management", "keysentry.verification",
                                               "keysentry.stores", "keysentry.limiters",
                                               "keysentry.core", "keysentry.toolkit",
                                               "keysentry.web"))]  # fmt: skip
    assert inner, "the module map changed: update this test"
    for name in inner:
        adapters = [t for t in graph[name] if is_adapter(t)]
        assert adapters == [], f"{name} imports {adapters}"
