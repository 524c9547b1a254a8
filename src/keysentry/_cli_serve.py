"""``keysentry serve`` (the admin API and /v1/authz under uvicorn) and ``keysentry demo``."""

from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any

from keysentry._cli_format import integer
from keysentry.errors import ConfigurationError
from keysentry.service import KeySentry
from keysentry.settings import DATABASE_URL_ENV, LIMITER_URL_ENV, database_url_from_env

__all__ = ["add_server_parsers"]


def add_server_parsers(groups: Any, common: argparse.ArgumentParser) -> None:
    """Add ``keysentry serve`` and ``keysentry demo`` to the command line."""
    p = groups.add_parser("serve", parents=[common], help="serve the admin API and /v1/authz")
    p.set_defaults(command=_serve)
    p.add_argument("--host", default=os.environ.get("KEYSENTRY_HOST", "127.0.0.1"),
                   help="default: $KEYSENTRY_HOST, else 127.0.0.1")  # fmt: skip
    p.add_argument("--port", type=integer, default=os.environ.get("KEYSENTRY_PORT", "8080"),
                   help="default: $KEYSENTRY_PORT, else 8080")  # fmt: skip
    p.add_argument("--limiter-url", default=os.environ.get(LIMITER_URL_ENV),
                   help=f"memory:// or redis://… (default: ${LIMITER_URL_ENV})")  # fmt: skip
    p.add_argument("--workers", type=integer, default=1)
    p.add_argument(
        "--open-verification",
        action="store_true",
        help="answer /v1/authz/check without an admin key (trusted networks only)",
    )
    p.add_argument(
        "--trusted-proxy", action="append", metavar="ADDRESS",
        help="a proxy whose X-Forwarded-For forward-auth believes (repeat for more; "
        "default: $KEYSENTRY_TRUSTED_PROXIES, else this machine's loopback)",
    )  # fmt: skip
    metrics = p.add_mutually_exclusive_group()
    metrics.add_argument("--no-metrics", action="store_true",
                         help="no /metrics (default: served when prometheus_client is "
                         "installed, to admin keys)")  # fmt: skip
    metrics.add_argument("--open-metrics", action="store_true",
                         help="serve /metrics without a key (trusted networks only)")  # fmt: skip
    p.add_argument("--no-pages", action="store_true",
                   help="no /dashboard/ and /portal/ (default: served when the web extra is "
                   "installed)")  # fmt: skip
    p.add_argument("--log-level", default="info")

    p = groups.add_parser("demo", help="serve an example API on a throw-away store")
    p.set_defaults(command=_demo)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=integer, help="default 8000 (with --check: a free port)")
    p.add_argument(
        "--check",
        action="store_true",
        help="play the whole tour over HTTP; exit 0 only if every step behaved",
    )


def _serve(a: argparse.Namespace) -> int:
    from keysentry.server import (
        METRICS_ENV,
        PAGES_ENV,
        TRUSTED_PROXIES_ENV,
        pages_available,
        serve,
    )

    url = database_url_from_env(getattr(a, "database_url", None))
    os.environ[DATABASE_URL_ENV] = url  # the workers build their service from these
    if a.limiter_url:
        os.environ[LIMITER_URL_ENV] = a.limiter_url
    if a.open_verification:
        os.environ["KEYSENTRY_OPEN_VERIFICATION"] = "1"
    if a.trusted_proxy:
        from keysentry.toolkit.proxies import parse_proxies

        parse_proxies(a.trusted_proxy)  # a bad address fails here, not in every worker
        os.environ[TRUSTED_PROXIES_ENV] = ",".join(a.trusted_proxy)
    os.environ.pop(METRICS_ENV, None)
    if not a.no_metrics and importlib.util.find_spec("prometheus_client") is not None:
        os.environ[METRICS_ENV] = "open" if a.open_metrics else "1"
    elif a.open_metrics:
        raise ConfigurationError("--open-metrics needs prometheus_client: "
                                 "pip install 'keysentry[metrics]'")  # fmt: skip
    os.environ.pop(PAGES_ENV, None)
    if not a.no_pages and pages_available():
        os.environ[PAGES_ENV] = "1"
    KeySentry(url, limiter_url=a.limiter_url).close()  # bad URLs fail here, once; schema made
    serve(host=a.host, port=a.port, workers=a.workers, log_level=a.log_level)
    return 0


def _demo(a: argparse.Namespace) -> int:
    from keysentry.demo import run_demo

    return run_demo(host=a.host, port=a.port, check=a.check)
