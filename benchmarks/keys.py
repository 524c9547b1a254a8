"""Key-format costs on the verification hot path against their physical floor.

Before any cache lookup, a presented key is parsed, its checksum checked and its SHA-256
taken (the cache key). The floor is the SHA-256 alone, which no design can skip.
"""

from __future__ import annotations

import hashlib
from typing import Any

from keysentry.core.keys import generate_key, parse_key


def scenarios(compare: Any, rounds: int) -> list[Any]:
    secret = generate_key("sk_live").secret
    raw = secret.encode()
    return [
        compare(
            "key parse+checksum+sha256",
            ("parse_key(secret).digest", lambda: parse_key(secret).digest),
            ("hashlib.sha256(secret).hexdigest()", lambda: hashlib.sha256(raw).hexdigest()),
            number=20_000,
            rounds=rounds,
        )
    ]
