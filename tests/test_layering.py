"""The architecture rules of STYLE.md, checked on the source, not trusted."""

from __future__ import annotations

import ast
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
        "'sqlalchemy', 'uvicorn', 'httpx'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def test_public_names_are_documented() -> None:
    for name in keysentry.__all__:
        obj = getattr(keysentry, name)
        if name != "__version__":
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
