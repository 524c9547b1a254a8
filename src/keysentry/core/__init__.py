"""The pure core of keysentry: key format, patterns and decisions.

Nothing in this package does I/O or reads the clock; callers pass ``now`` in.
``tests/test_layering.py`` checks its imports.
"""

from __future__ import annotations
