"""The one setup every verification benchmark measures: an app whose keys hold ``users:*``
on ``users/*``, one rate-limit rule (per minute, a quota no run reaches, so every request is
admitted and counted), and one key."""

from __future__ import annotations

from keysentry import KeySentry

HUGE = 1_000_000_000


def bench_key(ks: KeySentry, *, resources: bool = True, credits: int | None = None) -> str:
    """Create the app, its rule and a key in *ks*; return the key. *resources*: give the app
    resource patterns (a peer without resources is compared without them); *credits*: give
    the key that many."""
    ks.create_rate_limit_scheme("bench", "Bench", [{"unit": "minute", "max_requests": HUGE}])
    ks.create_api_auth_app(
        app_slug="bench", name="Bench", key_prefix="sk_live", permissions=["users:*"],
        resources=["users/*"] if resources else [], rate_limit_scheme_slug="bench",
    )  # fmt: skip
    return ks.create_api_key("bench", "k", credits=credits).secret
