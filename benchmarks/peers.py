"""Our cached verify against the libraries a user would otherwise pick, on comparable
in-memory stores, each with its own defaults:

* keyshield (``CachedApiKeyService``: Argon2 hasher, aiocache ``SimpleMemoryCache``,
  in-memory repository) with its randomized response delay turned off (``min_delay =
  max_delay = 0``): a cache hit, as ours.
* djangorestframework-api-key's ``HasAPIKey`` permission check (its key parser, its current
  SHA-512 hasher, the key found by prefix in Django's ORM on an in-memory SQLite): it has no
  cache, so every check is a lookup and a hash, which is what its users pay per request.

Ours runs through ``averify`` (keyshield is async) and ``verify`` (drf is sync), with the same
work on our side: a permission check and one rate-limit rule on the in-process limiter.
Skipped, with a note, when the peers are not installed (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.world import bench_key
from keysentry import KeySentry


def _ours() -> tuple[KeySentry, str]:
    ks = KeySentry("memory://", usage_interval=None)
    return ks, bench_key(ks, resources=False)


def _loop_runner(loop: asyncio.AbstractEventLoop, make: Any, n: int) -> Any:
    async def many() -> None:
        for _ in range(n):
            await make()

    return lambda: loop.run_until_complete(many())


def keyshield_scenario(compare: Any, rounds: int) -> Any:
    from keyshield.hasher.argon2 import Argon2ApiKeyHasher
    from keyshield.repositories.in_memory import InMemoryApiKeyRepository
    from keyshield.services.cached import CachedApiKeyService

    loop = asyncio.new_event_loop()
    service = CachedApiKeyService(
        repo=InMemoryApiKeyRepository(),
        hasher=Argon2ApiKeyHasher(pepper="bench-" * 4),
        min_delay=0,
        max_delay=0,
    )
    _, their_key = loop.run_until_complete(service.create(name="k", scopes=["users:read"]))
    loop.run_until_complete(service.verify_key(their_key, ["users:read"]))  # now cached
    ks, secret = _ours()
    bearer = f"Bearer {secret}"
    if not loop.run_until_complete(ks.averify(bearer, permissions="users:read")).allowed:
        raise RuntimeError("our key was refused")
    n = 200
    result = compare(
        f"cached verify vs keyshield ({n}/call)",
        ("ks.averify (permission, 1 rule)",
         _loop_runner(loop, lambda: ks.averify(bearer, permissions="users:read"), n)),
        ("keyshield CachedApiKeyService.verify_key, delay off",
         _loop_runner(loop, lambda: service.verify_key(their_key, ["users:read"]), n)),
        number=5, rounds=rounds, target=8.0,
    )  # fmt: skip
    ks.close()
    return result


def _django() -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                            "rest_framework", "rest_framework_api_key"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            USE_TZ=True, SECRET_KEY="bench-only", ALLOWED_HOSTS=["*"],  # noqa: S106
        )  # fmt: skip
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    return settings


def drf_scenario(compare: Any, rounds: int) -> Any:
    _django()
    from django.test import RequestFactory
    from rest_framework.request import Request
    from rest_framework_api_key.models import APIKey
    from rest_framework_api_key.permissions import HasAPIKey

    _, their_key = APIKey.objects.create_key(name="k")
    request = Request(RequestFactory().get("/users/42", HTTP_AUTHORIZATION=f"Api-Key {their_key}"))
    permission = HasAPIKey()
    if not permission.has_permission(request, None):  # type: ignore[arg-type]
        raise RuntimeError("drf-api-key refused its own key")
    ks, secret = _ours()
    bearer = f"Bearer {secret}"
    result = compare(
        "cached verify vs drf-api-key",
        ("ks.verify (permission, 1 rule)",
         lambda: ks.verify(bearer, path="/users/42", permissions="users:read")),
        ("HasAPIKey().has_permission (sqlite :memory:)",
         lambda: permission.has_permission(request, None)),  # type: ignore[arg-type]
        number=200, rounds=rounds, target=100.0,
    )  # fmt: skip
    ks.close()
    return result


def scenarios(compare: Any, rounds: int) -> list[Any]:
    results = []
    for name, scenario in (("keyshield", keyshield_scenario), ("drf-api-key", drf_scenario)):
        try:
            results.append(scenario(compare, rounds))
        except ImportError as exc:
            print(f"  skipped: {name} is not installed ({exc}); pip install -e '.[bench]'")
    return results
