"""``keysentry serve``: the admin API and the verification endpoints under uvicorn.

Settings come from flags (the CLI) or the environment, so that every worker process builds
its own :class:`~keysentry.KeySentry` after uvicorn forks it (database connections and
background threads are never shared across a fork): ``KEYSENTRY_DATABASE_URL``,
``KEYSENTRY_LIMITER_URL`` and ``KEYSENTRY_OPEN_VERIFICATION=1``. uvicorn shuts down gracefully
on SIGTERM or SIGINT: requests in flight finish, then each worker closes its store and limiter.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import re
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from keysentry.errors import ConfigurationError
from keysentry.settings import LIMITER_URL_ENV, database_url_from_env

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

__all__ = [
    "METRICS_ENV",
    "OPEN_VERIFICATION_ENV",
    "PAGES_ENV",
    "TRUSTED_PROXIES_ENV",
    "HideLinkTokens",
    "app_from_env",
    "free_port",
    "pages_available",
    "running",
    "serve",
]

OPEN_VERIFICATION_ENV = "KEYSENTRY_OPEN_VERIFICATION"
#: ``1``: serve ``/metrics`` (the CLI sets it unless ``--no-metrics``); ``open``: without a key.
METRICS_ENV = "KEYSENTRY_METRICS"
#: ``1``: serve the dashboard at ``/dashboard/`` and the portal at ``/portal/``.
PAGES_ENV = "KEYSENTRY_PAGES"
#: Comma-separated addresses or networks whose forwarding headers forward-auth believes.
TRUSTED_PROXIES_ENV = "KEYSENTRY_TRUSTED_PROXIES"
_PORTAL = "/portal"  # where the served pages put the portal (and its links' tokens)


def _uvicorn() -> ModuleType:
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError("serving needs uvicorn: pip install 'keysentry[serve]'") from None
    return uvicorn


def app_from_env() -> Any:
    """Build the served app from the environment (uvicorn calls it in each worker)."""
    from keysentry.admin import create_admin_app
    from keysentry.admin.authz import DEFAULT_TRUSTED_PROXIES
    from keysentry.service import KeySentry

    metrics = os.environ.get(METRICS_ENV, "")
    ks = KeySentry(
        database_url_from_env(),
        limiter_url=os.environ.get(LIMITER_URL_ENV) or None,
        metrics=bool(metrics),
    )
    open_verification = os.environ.get(OPEN_VERIFICATION_ENV, "") in ("1", "true", "yes")
    proxies = [p.strip() for p in os.environ.get(TRUSTED_PROXIES_ENV, "").split(",") if p.strip()]
    app = create_admin_app(
        ks,
        open_verification=open_verification,
        close_on_shutdown=True,
        trusted_proxies=proxies or DEFAULT_TRUSTED_PROXIES,
        metrics=bool(metrics),
        open_metrics=metrics == "open",
    )
    if os.environ.get(PAGES_ENV):
        from starlette.routing import Mount

        from keysentry.dashboard import create_dashboard_app
        from keysentry.portal import create_portal_app

        app.router.routes[:0] = [
            Mount("/dashboard", create_dashboard_app(ks)),
            Mount(_PORTAL, create_portal_app(ks)),
        ]
    return app


_LINK_TOKEN = re.compile(rf"({_PORTAL}/t/)[^/?#\s]+")


class HideLinkTokens(logging.Filter):
    """Writes a portal link's token as ``…`` in uvicorn's access log: the link's page is
    fetched (and logged) before its form spends the link, so the logged token still works."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the token in the record's path (uvicorn's third argument); keep the record."""
        args = record.args
        if isinstance(args, tuple) and len(args) > 2 and f"{_PORTAL}/t/" in str(args[2]):
            record.args = (*args[:2], _LINK_TOKEN.sub(r"\1…", str(args[2])), *args[3:])
        return True


def _log_config(uvicorn: ModuleType) -> dict[str, Any]:
    """uvicorn's own logging, with the access log's portal tokens hidden (every worker
    process configures its logging from this)."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["hide_link_tokens"] = {"()": "keysentry.server.HideLinkTokens"}
    config["handlers"]["access"].setdefault("filters", []).append("hide_link_tokens")
    return config


def pages_available() -> bool:
    """Whether the web extra (Jinja2, itsdangerous) is installed: the pages can be served."""
    return all(importlib.util.find_spec(m) is not None for m in ("jinja2", "itsdangerous"))


def serve(*, host: str, port: int, workers: int = 1, log_level: str = "info") -> None:
    """Run :func:`app_from_env` under uvicorn until SIGTERM or SIGINT.

    With metrics and several workers, each worker's values go to files in
    ``$PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary directory unless it is set), which
    every worker's ``/metrics`` adds up.
    """
    uvicorn = _uvicorn()
    if workers > 1 and os.environ.get(METRICS_ENV) and not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="keysentry-metrics-")
    uvicorn.run(
        "keysentry.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=_log_config(uvicorn),
        timeout_graceful_shutdown=10,
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running(app: Any, host: str, port: int, *, log_level: str = "warning") -> Iterator[Any]:
    """Serve *app* with uvicorn in a background thread for the duration of the block.

    Raises:
        ConfigurationError: the server did not start (the port is taken, say).
    """
    uvicorn = _uvicorn()
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="keysentry-server", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        thread.join(0.02)
    if not server.started:
        raise ConfigurationError(f"could not serve on {host}:{port} (is the port in use?)")
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(10)
