"""System tests: real processes, servers, nginx, killed services, propagation across workers.
Everything here is marked ``system``; ``pytest -m "not system"`` leaves it out."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups and -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test here ``system``, and put them in one pytest-xdist group: they run one
    after another on one worker, beside the rest (they start servers on spare ports and time
    processes; two at once on a two-core machine would only make each slower)."""
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.system)
            item.add_marker(pytest.mark.xdist_group("system"))
