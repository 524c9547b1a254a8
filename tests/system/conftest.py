"""System tests: real processes, servers, nginx, killed services, propagation across workers.
Everything here is marked ``system``; ``pytest -m "not system"`` leaves it out."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.system)
